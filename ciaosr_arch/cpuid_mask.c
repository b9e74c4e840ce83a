/* CPUID masking for an emulated narrower CPU (`ciaosr_arch.emulation`), loaded with LD_PRELOAD (Linux, x86-64).

   Libraries that pick their kernels from CPUID alone (OpenVINO's MLAS products, NumPy, PyTorch's cpuinfo) ignore
   the instruction-set limits of PyTorch, MKL and oneDNN. With CIAOSR_CPUID_HIDE set to five hexadecimal masks
   ("leaf 7.0 EBX, ECX, EDX, leaf 7.1 EAX, EDX"), this library turns on Linux's CPUID faulting for the process
   (arch_prctl ARCH_SET_CPUID, CPUs with the cpuid_fault flag; kept by the threads it starts, cleared by execve: an
   exec'd child is masked again only through the LD_PRELOAD it inherits) and answers each CPUID instruction itself
   from the handler of the SIGSEGV that the instruction then raises: the real answer with the masked bits cleared.
   It then sets CIAOSR_CPUID_MASKED=1, so the process can tell that the mask is on; without CPUID faulting it changes
   nothing and says so on stderr.

   The fault of a CPUID must reach this handler, so while the mask is on SIGSEGV is never blocked (it is taken out of
   the sets given to sigprocmask, pthread_sigmask and the masks of other handlers), and the program's own SIGSEGV
   action (Python's faulthandler) is kept aside, recorded from sigaction and signal, and applied to every other
   fault (its SA_RESETHAND honoured): a real crash reports and ends the process as without this library, except a
   stack overflow, which ends it with SIGSEGV but unreported (this handler does not run on an alternate stack).
   Not covered: code that runs before this library's constructor (the start-up code of the program's directly linked
   libraries, glibc's choice of its string functions), and SIGSEGV actions set through sigset, bsd_signal,
   sysv_signal or the raw system call, which replace this handler. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
typedef int (*sigmask_fn)(int, const sigset_t *, sigset_t *);

static uint32_t hide7_ebx, hide7_ecx, hide7_edx, hide71_eax, hide71_edx;
static int active;                       /* CPUID faulting on, this library's handler installed */
static struct sigaction program_action;  /* the SIGSEGV action the program asked for */

/* The functions this library stands in for, looked up once (lazily for calls before its constructor; dlsym is not
   safe in a signal handler, which only runs after the constructor has looked them all up). */
static sigaction_fn real_sigaction_fn;
static sigmask_fn real_sigprocmask_fn, real_pthread_sigmask_fn;
static sighandler_t (*real_signal_fn)(int, sighandler_t);

static void find_real_functions(void) {
    if (real_sigaction_fn) return;
    real_signal_fn = (sighandler_t (*)(int, sighandler_t))dlsym(RTLD_NEXT, "signal");
    real_sigprocmask_fn = (sigmask_fn)dlsym(RTLD_NEXT, "sigprocmask");
    real_pthread_sigmask_fn = (sigmask_fn)dlsym(RTLD_NEXT, "pthread_sigmask");
    real_sigaction_fn = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
}

static sigaction_fn real_sigaction(void) {
    find_real_functions();
    return real_sigaction_fn;
}

static long set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void set_default_action(void) {
    struct sigaction fallback;
    memset(&fallback, 0, sizeof fallback);
    fallback.sa_handler = SIG_DFL;
    real_sigaction()(SIGSEGV, &fallback, NULL);
}

static void answer_cpuid(greg_t *reg) {
    uint32_t leaf = (uint32_t)reg[REG_RAX], sub = (uint32_t)reg[REG_RCX], a, b, c, d;
    if (set_cpuid(1) != 0) {  /* refused (a seccomp filter): the CPUID cannot be answered */
        static const char message[] = "ciaosr cpuid mask: arch_prctl(ARCH_SET_CPUID) refused in a masked process\n";
        ssize_t written = write(2, message, sizeof message - 1);
        (void)written;
        _exit(70);
    }
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        b &= ~hide7_ebx;
        c &= ~hide7_ecx;
        d &= ~hide7_edx;
    } else if (leaf == 7 && sub == 1) {
        a &= ~hide71_eax;
        d &= ~hide71_edx;
    }
    reg[REG_RAX] = a;
    reg[REG_RBX] = b;
    reg[REG_RCX] = c;
    reg[REG_RDX] = d;
    reg[REG_RIP] += 2;
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    int saved_errno = errno;
    greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)reg[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {  /* a faulting CPUID */
        answer_cpuid(reg);
        errno = saved_errno;
        return;
    }
    struct sigaction action = program_action;
    if (action.sa_flags & SA_RESETHAND) program_action.sa_handler = SIG_DFL;
    if (action.sa_handler == SIG_IGN && info->si_code <= 0) {  /* sent by a process, and ignored */
        errno = saved_errno;
        return;
    }
    if (action.sa_handler == SIG_DFL || action.sa_handler == SIG_IGN) {
        set_default_action();
        if (info->si_code <= 0) raise(SIGSEGV);  /* sent: delivered again, by default, once this returns */
        return;  /* a fault: the instruction faults again, now with the default action (a core dump at it) */
    }
    sigset_t blocked, previous;  /* the program's handler runs with its own mask (SIGSEGV excepted) */
    blocked = action.sa_mask;
    sigdelset(&blocked, SIGSEGV);
    real_pthread_sigmask_fn(SIG_SETMASK, &blocked, &previous);
    if (action.sa_flags & SA_SIGINFO) {
        action.sa_sigaction(sig, info, context);
    } else {
        action.sa_handler(sig);
    }
    real_pthread_sigmask_fn(SIG_SETMASK, &previous, NULL);
    errno = saved_errno;
}

/* While the mask is on: the program's SIGSEGV actions are recorded, not installed (this library's handler stays),
   and no handler blocks SIGSEGV. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!active) return real_sigaction()(sig, act, old);
    if (sig != SIGSEGV) {
        if (!act) return real_sigaction()(sig, act, old);
        struct sigaction copy = *act;
        sigdelset(&copy.sa_mask, SIGSEGV);
        return real_sigaction()(sig, &copy, old);
    }
    struct sigaction given;  /* read before *old is written: act and old may be the same struct */
    if (act) given = *act;
    if (old) *old = program_action;
    if (act) program_action = given;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    find_real_functions();
    if (!active || sig != SIGSEGV) return real_signal_fn(sig, handler);
    sighandler_t previous = program_action.sa_handler;
    memset(&program_action, 0, sizeof program_action);
    program_action.sa_handler = handler;
    program_action.sa_flags = SA_RESTART;  /* glibc's signal: BSD semantics */
    return previous;
}

/* SIGSEGV taken out of the signals a thread blocks: the fault of a blocked SIGSEGV would end the process. */
static int unblocking(sigmask_fn real, int how, const sigset_t *set, sigset_t *old) {
    if (!active || !set || how == SIG_UNBLOCK) return real(how, set, old);
    sigset_t copy = *set;
    sigdelset(&copy, SIGSEGV);
    return real(how, &copy, old);
}

int sigprocmask(int how, const sigset_t *set, sigset_t *old) {
    find_real_functions();
    return unblocking(real_sigprocmask_fn, how, set, old);
}

int pthread_sigmask(int how, const sigset_t *set, sigset_t *old) {
    find_real_functions();
    return unblocking(real_pthread_sigmask_fn, how, set, old);
}

__attribute__((constructor)) static void install(void) {
    const char *hide = getenv("CIAOSR_CPUID_HIDE");
    find_real_functions();
    unsetenv("CIAOSR_CPUID_MASKED");
    if (!hide || sscanf(hide, "%x %x %x %x %x", &hide7_ebx, &hide7_ecx, &hide7_edx, &hide71_eax,
                        &hide71_edx) != 5) return;
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_segv;
    /* Not SA_ONSTACK: OpenVINO's CPU plugin points the alternate signal stack of the thread that creates it at a
       20 KB buffer of its own, which is no longer usable once the plugin is gone (a CPUID answered there ended a
       pytest run of the CLI's tests with SIGSEGV). So a stack overflow ends the process unreported. */
    act.sa_flags = SA_SIGINFO;
    sigfillset(&act.sa_mask);  /* nothing else runs while CPUID faulting is switched off */
    if (real_sigaction()(SIGSEGV, &act, &program_action) != 0 || set_cpuid(0) != 0) {
        real_sigaction()(SIGSEGV, &program_action, NULL);
        fprintf(stderr, "ciaosr cpuid mask: CPUID faulting is not available here (no cpuid_fault): not masked\n");
        return;
    }
    active = 1;
    setenv("CIAOSR_CPUID_MASKED", "1", 1);
}
