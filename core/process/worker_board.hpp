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

#include "metrics.hpp"

namespace smp {

struct WorkerSeat {
    std::atomic<pid_t> pid{0};  // the holder; 0 when the seat is free
    std::atomic<uint32_t> ready{0};
    std::atomic<int64_t> connections{0};
    std::atomic<int64_t> downloads{0};  // responses that have reported progress (run longer than a second)
    uint32_t number = 0;                // its place on the board: its part of the metrics
};

class WorkerBoard {
   public:
    // Enough for the largest `workers` setting twice over: the old and the
    // new generation meet during a reload.
    static constexpr size_t kSeats = metrics::Board::kSeats;

    WorkerBoard() {
        void* memory = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) throw std::runtime_error("cannot map the workers' status board");
        seats_ = new (memory) WorkerSeat[kSeats];
        for (size_t i = 0; i < kSeats; ++i) seats_[i].number = static_cast<uint32_t>(i);
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
                metrics_.seat_used(i);
                return &seats_[i];
            }
        return nullptr;
    }
    void give_back(WorkerSeat* seat) {
        if (seat == nullptr) return;
        reset(*seat);
        metrics_.seat_emptied(seat->number);
        taken_[seat->number] = false;
    }

    metrics::Board& metrics() { return metrics_; }
    // The server's metrics in Prometheus's text format, with the seats'
    // connections and downloads summed (any process of the server).
    std::string prometheus_text() const {
        const auto [connections, downloads] = seat_sums();
        return metrics_.prometheus_text(connections, downloads);
    }
    // The same totals as numbers (core->counters).
    void counters(smp_counters& out) const {
        const auto [connections, downloads] = seat_sums();
        const metrics::Totals totals = metrics_.totals();
        out.requests = totals.requests;
        out.sent_bytes = totals.sent_bytes;
        out.connections_open = connections;
        out.downloads_in_progress = downloads;
    }

   private:
    // The connections and the downloads in progress of the live seats.
    std::pair<int64_t, int64_t> seat_sums() const {
        int64_t connections = 0;
        int64_t downloads = 0;
        for (size_t i = 0; i < kSeats; ++i)
            if (seats_[i].pid.load(std::memory_order_relaxed) != 0) {
                connections += seats_[i].connections.load(std::memory_order_relaxed);
                downloads += seats_[i].downloads.load(std::memory_order_relaxed);
            }
        return {connections, downloads};
    }
    static size_t bytes() { return sizeof(WorkerSeat) * kSeats; }
    static void reset(WorkerSeat& seat) {
        seat.pid = 0;
        seat.ready = 0;
        seat.connections = 0;
        seat.downloads = 0;
    }

    WorkerSeat* seats_ = nullptr;
    metrics::Board metrics_;
    bool taken_[kSeats] = {};  // the master's own bookkeeping, not shared
};

// The board of this server: the master's, which every child inherits;
// nullptr in a process that has none (`smprotocol stats`, `-t`, unit tests).
inline WorkerBoard*& the_worker_board() {
    static WorkerBoard* board = nullptr;
    return board;
}

}  // namespace smp
