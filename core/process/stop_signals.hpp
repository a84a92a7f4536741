// How a child process (worker or collector) hears SIGTERM and SIGQUIT (stop)
// and SIGUSR1 (reopen the log files, forwarded by the master): the
// master blocked them before fork, and each child reads its own through a
// signalfd watched on its own loop, so no signal handler state crosses fork.
#pragma once

#include <signal.h>
#include <sys/signalfd.h>
#include <uv.h>

#include <cerrno>
#include <system_error>

namespace smp {

// Starts `poll` on a new signalfd for SIGTERM, SIGQUIT and SIGUSR1; returns the fd,
// which the caller closes after uv_close(poll). Throws std::system_error when
// the descriptor cannot be made (out of descriptors): a child that could not
// hear its stop signal must not start.
inline int watch_stop_signals(uv_loop_t* loop, uv_poll_t* poll, void* data, uv_poll_cb on_signal) {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGQUIT);
    sigaddset(&signals, SIGUSR1);
    const int fd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "signalfd for the stop signals");
    int error = uv_poll_init(loop, poll, fd);
    if (error == 0) {
        poll->data = data;
        error = uv_poll_start(poll, UV_READABLE, on_signal);
    }
    if (error != 0) throw std::system_error(-error, std::generic_category(), "watching the stop signals");
    return fd;
}

}  // namespace smp
