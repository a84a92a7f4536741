// A page of shared memory where each worker posts what the master cannot
// see from outside: that it is ready to accept, and how many connections
// and downloads it is serving. The master maps it before the first fork,
// so every worker of every generation shares it; it gives each worker a
// seat and takes the seat back when it reaps the worker.
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>

namespace smp {

struct WorkerSeat {
    std::atomic<pid_t> pid{0};  // the holder; 0 when the seat is free
    std::atomic<uint32_t> ready{0};
    std::atomic<int64_t> connections{0};
    std::atomic<int64_t> downloads{0};  // responses that have reported progress (run longer than a second)
};

class WorkerBoard {
   public:
    // Enough for the largest `workers` setting twice over: the old and the
    // new generation meet during a reload.
    static constexpr size_t kSeats = 4096;

    WorkerBoard() {
        void* memory = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) throw std::runtime_error("cannot map the workers' status board");
        seats_ = new (memory) WorkerSeat[kSeats];
    }
    ~WorkerBoard() { munmap(seats_, bytes()); }
    WorkerBoard(const WorkerBoard&) = delete;
    WorkerBoard& operator=(const WorkerBoard&) = delete;

    // A free seat for a worker about to be forked, or nullptr when every
    // seat is taken (the worker then runs without posting).
    WorkerSeat* take() {
        for (size_t i = 0; i < kSeats; ++i)
            if (!taken_[i]) {
                taken_[i] = true;
                reset(seats_[i]);
                return &seats_[i];
            }
        return nullptr;
    }
    void give_back(WorkerSeat* seat) {
        if (seat == nullptr) return;
        reset(*seat);
        taken_[static_cast<size_t>(seat - seats_)] = false;
    }

   private:
    static size_t bytes() { return sizeof(WorkerSeat) * kSeats; }
    static void reset(WorkerSeat& seat) {
        seat.pid = 0;
        seat.ready = 0;
        seat.connections = 0;
        seat.downloads = 0;
    }

    WorkerSeat* seats_ = nullptr;
    bool taken_[kSeats] = {};  // the master's own bookkeeping, not shared
};

}  // namespace smp
