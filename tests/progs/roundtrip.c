/* The program of tests/test_kernel_roundtrip.py: threads in known states
 * when the kernel dumps its core (the test kills it with SIGSEGV).
 *
 *   main    blocks SIGUSR2 (all threads inherit it), queues a SIGUSR2 to the
 *           whole process (it stays in the shared queue), waits in pause();
 *   vector  puts known values in ymm0..ymm15 and spins without touching them;
 *   signal  also blocks SIGUSR1; main sends it one with pthread_kill(), so
 *           it is pending in that thread's own queue; waits in pause();
 *   parked  waits in pause() under a few frames.
 *
 * Build: gcc -g -O0 -pthread -mavx.  Prints "ready PID" when all are set. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

/* byte b of ymm r is (17 * r + 7 * b + 1) mod 256; the test knows it too */
unsigned char ymm_values[16][32] __attribute__((aligned(32)));
static volatile int ready;

static void *vector_thread(void *arg)
{
	for (int r = 0; r < 16; r++)
		for (int b = 0; b < 32; b++)
			ymm_values[r][b] = (unsigned char)(17 * r + 7 * b + 1);
	__asm__ volatile(
		"vmovdqu 0(%0), %%ymm0\n\t"
		"vmovdqu 32(%0), %%ymm1\n\t"
		"vmovdqu 64(%0), %%ymm2\n\t"
		"vmovdqu 96(%0), %%ymm3\n\t"
		"vmovdqu 128(%0), %%ymm4\n\t"
		"vmovdqu 160(%0), %%ymm5\n\t"
		"vmovdqu 192(%0), %%ymm6\n\t"
		"vmovdqu 224(%0), %%ymm7\n\t"
		"vmovdqu 256(%0), %%ymm8\n\t"
		"vmovdqu 288(%0), %%ymm9\n\t"
		"vmovdqu 320(%0), %%ymm10\n\t"
		"vmovdqu 352(%0), %%ymm11\n\t"
		"vmovdqu 384(%0), %%ymm12\n\t"
		"vmovdqu 416(%0), %%ymm13\n\t"
		"vmovdqu 448(%0), %%ymm14\n\t"
		"vmovdqu 480(%0), %%ymm15\n\t"
		"lock incl (%1)\n\t"
		"1: pause\n\t"
		"jmp 1b\n\t"
		: : "r"(ymm_values), "r"(&ready)
		: "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
		  "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
		  "xmm14", "xmm15");
	return arg;
}

static void *signal_thread(void *arg)
{
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	__atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
	for (;;)
		pause();
	return arg;
}

static void __attribute__((noinline)) park(int depth)
{
	if (depth > 0) {
		park(depth - 1);
		return;
	}
	__atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
	for (;;)
		pause();
}

static void *parked_thread(void *arg)
{
	park(3);
	return arg;
}

int main(void)
{
	pthread_t vector, sig, parked;
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	pthread_create(&vector, NULL, vector_thread, NULL);
	pthread_create(&sig, NULL, signal_thread, NULL);
	pthread_create(&parked, NULL, parked_thread, NULL);
	while (__atomic_load_n(&ready, __ATOMIC_SEQ_CST) < 3)
		usleep(1000);
	pthread_kill(sig, SIGUSR1);
	kill(getpid(), SIGUSR2);
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}
