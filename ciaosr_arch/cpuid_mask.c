/* CPUID masking for an emulated narrower CPU (`ciaosr_arch.emulation`), loaded with LD_PRELOAD (Linux, x86-64).

   Libraries that pick their kernels from CPUID alone (OpenVINO's MLAS products, NumPy, PyTorch's cpuinfo) ignore
   the instruction-set limits of PyTorch, MKL and oneDNN. With CIAOSR_CPUID_HIDE set to five hexadecimal masks
   ("leaf 7.0 EBX, ECX, EDX, leaf 7.1 EAX, EDX"), this library turns on Linux's CPUID faulting for the process
   (arch_prctl ARCH_SET_CPUID, kept by its threads and children; CPUs with the cpuid_fault flag) and answers each
   CPUID instruction itself from the handler of the SIGSEGV that the instruction then raises: the real answer with
   the masked bits cleared. It then sets CIAOSR_CPUID_MASKED=1, so the process can tell that the mask is on; without
   CPUID faulting it changes nothing and says so on stderr.

   The program's own SIGSEGV handlers (Python's faulthandler) are kept aside and called for every other fault, so
   a real crash still reports and ends the process as without this library. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static uint32_t hide7_ebx, hide7_ecx, hide7_edx, hide71_eax, hide71_edx;
static int active;                   /* CPUID faulting on, this library's handler installed */
static struct sigaction program_action;  /* the SIGSEGV action the program asked for */

static sigaction_fn real_sigaction(void) {
    static sigaction_fn real;
    if (!real) real = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return real;
}

static long set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void on_segv(int sig, siginfo_t *info, void *context) {
    greg_t *reg = ((ucontext_t *)context)->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)reg[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {  /* a faulting CPUID */
        uint32_t leaf = (uint32_t)reg[REG_RAX], sub = (uint32_t)reg[REG_RCX], a, b, c, d;
        set_cpuid(1);
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
        return;
    }
    if (program_action.sa_flags & SA_SIGINFO) {
        program_action.sa_sigaction(sig, info, context);
    } else if (program_action.sa_handler != SIG_DFL && program_action.sa_handler != SIG_IGN) {
        program_action.sa_handler(sig);
    } else {  /* the default action: end the process with this signal */
        struct sigaction fallback;
        memset(&fallback, 0, sizeof fallback);
        fallback.sa_handler = SIG_DFL;
        real_sigaction()(SIGSEGV, &fallback, NULL);
        raise(SIGSEGV);
    }
}

/* The program's SIGSEGV actions are recorded, not installed, while the mask is on: this library's handler stays. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV || !active) return real_sigaction()(sig, act, old);
    if (old) *old = program_action;
    if (act) program_action = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    return sigaction(sig, &act, &old) == 0 ? old.sa_handler : SIG_ERR;
}

__attribute__((constructor)) static void install(void) {
    const char *hide = getenv("CIAOSR_CPUID_HIDE");
    unsetenv("CIAOSR_CPUID_MASKED");
    if (!hide || sscanf(hide, "%x %x %x %x %x", &hide7_ebx, &hide7_ecx, &hide7_edx, &hide71_eax,
                        &hide71_edx) != 5) return;
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_segv;
    act.sa_flags = SA_SIGINFO;
    sigemptyset(&act.sa_mask);
    if (real_sigaction()(SIGSEGV, &act, &program_action) != 0 || set_cpuid(0) != 0) {
        real_sigaction()(SIGSEGV, &program_action, NULL);
        fprintf(stderr, "ciaosr cpuid mask: CPUID faulting is not available here (no cpuid_fault): not masked\n");
        return;
    }
    active = 1;
    setenv("CIAOSR_CPUID_MASKED", "1", 1);
}
