// Java threads parked in the JVM's usual waits, for jhsdb to read from a
// core: Thread.sleep under recursive frames, Object.wait, a monitor held by
// another thread, LockSupport.park and a blocking read of a pipe (java.nio.channels.Pipe);
// main prints "ready" once every one has started, then sleeps.  Built by
// javac (tests/test_real_criu_runtimes.py).
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.locks.LockSupport;

public class Parked {
    static final Object monitor = new Object();
    static final Object held = new Object();
    static int counter = 42;

    static int sleeper(int depth, CountDownLatch started) throws InterruptedException {
        if (depth > 0) {
            return sleeper(depth - 1, started) + 1;
        }
        started.countDown();
        Thread.sleep(3_600_000L);
        return 0;
    }

    static void start(String name, Runnable r) {
        Thread t = new Thread(r, name);
        t.setDaemon(true);
        t.start();
    }

    public static void main(String[] args) throws Exception {
        CountDownLatch started = new CountDownLatch(4);
        CountDownLatch last = new CountDownLatch(1);
        java.nio.channels.Pipe pipe = java.nio.channels.Pipe.open();
        start("sleeper", () -> {
            try { sleeper(3, started); } catch (InterruptedException e) { }
        });
        start("waiter", () -> {
            synchronized (monitor) {
                started.countDown();
                try { monitor.wait(); } catch (InterruptedException e) { }
            }
        });
        start("holder", () -> {
            synchronized (held) {
                started.countDown();
                LockSupport.park();
            }
        });
        start("reader", () -> {
            started.countDown();
            try {
                counter += pipe.source().read(java.nio.ByteBuffer.allocate(1));
            } catch (java.io.IOException e) { }
        });
        started.await();
        start("blocked", () -> {
            last.countDown();
            synchronized (held) { counter++; }
        });
        last.await();
        System.out.println("ready " + ProcessHandle.current().pid());
        Thread.sleep(3_600_000L);
    }
}
