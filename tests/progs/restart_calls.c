/*
 * Threads blocked in many different system calls, so that the kernel's core
 * shows what each one returns when a signal interrupts it (the -ERESTART*
 * code in rax/eax, the instruction pointer after the `syscall`/`int $0x80`).
 * Built for x86_64 and for i386 by tests/test_syscall_restart.py, which
 * kills it with SIGSEGV and compares the kernel's core with ours.
 *
 * Every call is made with syscall(2), so that its number is known (the
 * libc wrappers of i386 pick the *_time64 calls), again and again when it
 * returns.  `prog --list` prints the numbers the threads will sit in, and
 * `prog --list-continued` those after a SIGSTOP and SIGCONT; the main
 * thread waits for its child in wait4, after printing `ready`.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef SYS__newselect
#define SELECT_NR SYS__newselect	/* i386: SYS_select is old_select */
#else
#define SELECT_NR SYS_select
#endif
#ifndef SYS_accept
#define SYS_accept SYS_accept4
#endif

struct ts { long sec, nsec; };		/* the kernel's timespec of this ABI */

static uint32_t futex_word, pi_word;
static int pipe_fds[2], poll_fds[2], dgram_fds[2], listen_fd, epoll_fd, lock_fd;
static volatile int started;

#define CALL(name, ...)                                                     \
	static void *name(void *arg)                                        \
	{                                                                   \
		(void)arg;                                                  \
		__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);          \
		for (;;)                                                    \
			__VA_ARGS__;                                        \
		return NULL;                                                \
	}

static struct ts hour = {3600, 0}, far = {1L << 30, 0};

CALL(t_futex_wait, syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL))
CALL(t_futex_wait_timeout, syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &hour))
CALL(t_futex_lock_pi, syscall(SYS_futex, &pi_word, FUTEX_LOCK_PI_PRIVATE, 0, NULL))
CALL(t_pause, syscall(SYS_pause))
CALL(t_nanosleep, syscall(SYS_nanosleep, &hour, NULL))
CALL(t_clock_nanosleep_rel, syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &hour, NULL))
CALL(t_clock_nanosleep_abs, syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, &far, NULL))
CALL(t_sigtimedwait, {
	uint64_t usr1 = 1ULL << (SIGUSR1 - 1);
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, &usr1, NULL, 8);
	syscall(SYS_rt_sigtimedwait, &usr1, NULL, NULL, 8); })
CALL(t_read_pipe, { char c; syscall(SYS_read, pipe_fds[0], &c, 1); })
CALL(t_poll, { struct pollfd p = {poll_fds[0], POLLIN, 0}; syscall(SYS_poll, &p, 1, -1); })
CALL(t_poll_timeout, { struct pollfd p = {poll_fds[0], POLLIN, 0}; syscall(SYS_poll, &p, 1, 3600000); })
CALL(t_ppoll, { struct pollfd p = {poll_fds[0], POLLIN, 0}; syscall(SYS_ppoll, &p, 1, NULL, NULL, 8); })
CALL(t_select, {
	fd_set r; FD_ZERO(&r); FD_SET(poll_fds[0], &r);
	struct { long sec, usec; } tv = {3600, 0};
	syscall(SELECT_NR, poll_fds[0] + 1, &r, NULL, NULL, &tv); })
CALL(t_rt_sigsuspend, { uint64_t none = 0; syscall(SYS_rt_sigsuspend, &none, 8); })
CALL(t_recvfrom, { char c; syscall(SYS_recvfrom, dgram_fds[0], &c, 1, 0, NULL, NULL); })
CALL(t_accept, syscall(SYS_accept, listen_fd, NULL, NULL, 0))
CALL(t_flock, { int fd = open("restart_calls.lock", O_RDWR); syscall(SYS_flock, fd, LOCK_EX); })
CALL(t_epoll_wait, { struct epoll_event e; syscall(SYS_epoll_wait, epoll_fd, &e, 1, -1); })

static void *(*const threads[])(void *) = {
	t_futex_wait, t_futex_wait_timeout, t_futex_lock_pi, t_pause, t_nanosleep,
	t_clock_nanosleep_rel, t_clock_nanosleep_abs, t_sigtimedwait, t_read_pipe, t_poll, t_poll_timeout, t_ppoll,
	t_select, t_rt_sigsuspend, t_recvfrom, t_accept, t_flock, t_epoll_wait,
};
#define NTHREADS (sizeof(threads) / sizeof(threads[0]))

static const long numbers[NTHREADS + 1] = {
	SYS_futex, SYS_futex, SYS_futex, SYS_pause, SYS_nanosleep,
	SYS_clock_nanosleep, SYS_clock_nanosleep, SYS_rt_sigtimedwait, SYS_read,
	SYS_poll, SYS_poll, SYS_ppoll, SELECT_NR, SYS_rt_sigsuspend,
	SYS_recvfrom, SYS_accept, SYS_flock, SYS_epoll_wait, SYS_wait4,
};

/* The same after SIGSTOP and SIGCONT: the calls that set a restart block
 * are back in restart_syscall. */
static const long continued[NTHREADS + 1] = {
	SYS_futex, SYS_restart_syscall, SYS_futex, SYS_pause, SYS_restart_syscall,
	SYS_restart_syscall, SYS_clock_nanosleep, SYS_rt_sigtimedwait, SYS_read,
	SYS_restart_syscall, SYS_restart_syscall, SYS_ppoll, SELECT_NR,
	SYS_rt_sigsuspend, SYS_recvfrom, SYS_accept, SYS_flock, SYS_epoll_wait,
	SYS_wait4,
};

int main(int argc, char **argv)
{
	pthread_t t;
	struct sockaddr_un sun = {AF_UNIX, ""};
	struct epoll_event ev = {EPOLLIN, {0}};
	pid_t child;

	if (argc > 1) {		/* --list or --list-continued */
		const long *list = strcmp(argv[1], "--list") ? continued : numbers;

		for (size_t i = 0; i <= NTHREADS; i++)
			printf("%ld\n", list[i]);
		return 0;
	}
	child = fork();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	pi_word = (uint32_t)syscall(SYS_gettid);	/* "held" by main */
	if (pipe(pipe_fds) || pipe(poll_fds))
		return 1;
	/* a datagram socket of AF_UNIX, not UDP: CRIU 4.1.1 cannot dump a UDP
	 * socket on Linux 6.16+ (SO_PASSCRED is refused on it) */
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dgram_fds))
		return 1;
	listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(listen_fd, (struct sockaddr *)&sun, sizeof(sa_family_t)) ||
	    listen(listen_fd, 1))	/* autobind: an abstract address */
		return 1;
	epoll_fd = epoll_create1(0);
	epoll_ctl(epoll_fd, EPOLL_CTL_ADD, poll_fds[0], &ev);
	lock_fd = open("restart_calls.lock", O_RDWR | O_CREAT, 0600);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX))
		return 1;
	for (size_t i = 0; i < NTHREADS; i++)
		pthread_create(&t, NULL, threads[i], NULL);
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < (int)NTHREADS)
		usleep(1000);
	printf("ready %d\n", (int)child);
	fflush(stdout);
	for (;;)
		syscall(SYS_wait4, child, NULL, 0, NULL);
	return 0;
}
