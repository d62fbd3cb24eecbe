// Goroutines parked in the runtime's usual waits, for Delve to list from a
// core: a timer (time.Sleep, under recursive frames), a channel receive, a
// mutex, a select, a read from a pipe (the netpoller) and a WaitGroup; the
// main goroutine prints "ready" once every one of them has started, then
// sleeps.  Built by `go build` (tests/test_real_criu_runtimes.py).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

var globalCounter = 42
var message = "hello from a goroutine"

//go:noinline
func sleeper(depth int, started *sync.WaitGroup) int {
	if depth > 0 {
		return sleeper(depth-1, started) + 1
	}
	started.Done()
	time.Sleep(time.Hour)
	return 0
}

//go:noinline
func receiver(c chan int, started *sync.WaitGroup) {
	started.Done()
	globalCounter += <-c
}

//go:noinline
func locker(m *sync.Mutex, started *sync.WaitGroup) {
	started.Done()
	m.Lock()
	globalCounter++
}

//go:noinline
func selector(a, b chan int, started *sync.WaitGroup) {
	started.Done()
	select {
	case v := <-a:
		globalCounter += v
	case v := <-b:
		globalCounter -= v
	}
}

//go:noinline
func reader(f *os.File, started *sync.WaitGroup) {
	buf := make([]byte, 1)
	started.Done()
	n, _ := f.Read(buf)
	globalCounter += n
}

//go:noinline
func waiter(never *sync.WaitGroup, started *sync.WaitGroup) {
	started.Done()
	never.Wait()
}

func main() {
	runtime.GOMAXPROCS(2)
	var started, never sync.WaitGroup
	var m sync.Mutex
	m.Lock()
	c, a, b := make(chan int), make(chan int), make(chan int)
	r, w, err := os.Pipe()
	if err != nil {
		panic(err)
	}
	never.Add(1)
	started.Add(6)
	go sleeper(3, &started)
	go receiver(c, &started)
	go locker(&m, &started)
	go selector(a, b, &started)
	go reader(r, &started)
	go waiter(&never, &started)
	started.Wait()
	fmt.Println("ready", os.Getpid(), message)
	time.Sleep(time.Hour)
	w.Close()
}
