/*
 * Three threads parked in pause() under a few recursive frames, then the
 * main thread aborts, so that the kernel (or qemu-user, for a guest
 * program) writes a core of a multi-threaded process.  Built static for
 * each architecture by tests/test_cross_arch.py.
 */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

volatile int parked;
char marker[64] = "criu-coredump cross-arch marker";

__attribute__((noinline)) static int leaf(int n)
{
	__atomic_add_fetch(&parked, 1, __ATOMIC_SEQ_CST);
	for (;;)
		pause();
	return n;
}

__attribute__((noinline)) static int recurse(int n)
{
	if (n == 0)
		return leaf(n);
	return recurse(n - 1) + 1;
}

static void *worker(void *arg)
{
	return (void *)(long)recurse((int)(long)arg);
}

__attribute__((noinline)) static void crash(void)
{
#if defined(__i386__)
	/* Values on the x87 stack (zero, one, pi), so that the core's
	 * NT_PRFPREG carries valid, zero and empty tags. */
	__asm__ volatile("fldpi\n\tfld1\n\tfldz" ::: "memory");
#endif
	raise(SIGABRT);
}

int main(void)
{
	pthread_t t[3];

	for (long i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, worker, (void *)(i + 2));
	while (__atomic_load_n(&parked, __ATOMIC_SEQ_CST) < 3)
		usleep(1000);
	usleep(50000);	/* let the last one reach pause() */
	crash();
	return 0;
}
