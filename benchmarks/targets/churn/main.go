// Command churn is the target of scripts/soak: goroutines created, parked, woken and exited at a
// steady rate, plus leaks added over time at one known go statement, in known numbers.
//
// Every 10 ms a batch of -rate/100 workers is started in pairs: the two of a pair play -rounds
// rounds of ping-pong over an unbuffered channel (each round parks and wakes both), sleep 1-4 ms,
// check the values they exchanged and exit. Every -leak-every one batch of -leak-count
// goroutines is leaked at the line marked "leak:batch" (blocked forever on a channel receive)
// and announced as "leaked batch=B total=T t=S". Once a second a heartbeat line carries the
// counters and the self-check:
//
//	heartbeat n=N t=S started=A finished=B inflight=C leaked=L goroutines=G oldest_ms=O bad=X check=ok
//
// check=ok means: every value exchanged was right (bad=0), every batch of workers older than
// 5 s has finished (oldest_ms < 5000), and started = finished + inflight. On SIGTERM or SIGINT
// the spawner stops, every started worker must finish, then
//
//	exit started=A finished=A leaked=L goroutines=G check=ok
//
// where G must be the fixed goroutines plus the leaks; the exit status is 0 only if check=ok.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	started, finished, bad atomic.Int64
	leaked                 atomic.Int64
	t0                     = time.Now()
	leakChans              []chan int // never sent to, never closed
)

type batch struct {
	born      time.Time
	remaining atomic.Int64
}

var (
	mu      sync.Mutex
	batches = map[*batch]struct{}{}
)

func worker(b *batch, ch chan int, leader bool, rounds int, id int64) {
	for r := 0; r < rounds; r++ {
		if leader {
			ch <- int(id) + r
			if got := <-ch; got != 2*(int(id)+r)+1 {
				bad.Add(1)
			}
		} else {
			v := <-ch
			ch <- 2*v + 1
		}
	}
	time.Sleep(time.Duration(1+id%4) * time.Millisecond)
	finished.Add(1)
	if b.remaining.Add(-1) == 0 {
		mu.Lock()
		delete(batches, b)
		mu.Unlock()
	}
}

func spawn(n, rounds int) {
	b := &batch{born: time.Now()}
	b.remaining.Store(int64(2 * n))
	mu.Lock()
	batches[b] = struct{}{}
	mu.Unlock()
	for i := 0; i < n; i++ {
		ch := make(chan int)
		id := started.Add(2)
		go worker(b, ch, true, rounds, id)  // busy:leader
		go worker(b, ch, false, rounds, id) // busy:follower
	}
}

func leakOne(ch chan int) {
	<-ch
}

func leakBatch(k int) {
	ch := make(chan int)
	leakChans = append(leakChans, ch)
	for i := 0; i < k; i++ {
		go leakOne(ch) // leak:batch
	}
	leaked.Add(int64(k))
}

func oldestMs() int64 {
	mu.Lock()
	defer mu.Unlock()
	var oldest int64
	for b := range batches {
		if age := time.Since(b.born).Milliseconds(); age > oldest {
			oldest = age
		}
	}
	return oldest
}

func main() {
	rate := flag.Int("rate", 1500, "workers started per second (in pairs)")
	rounds := flag.Int("rounds", 2, "ping-pong rounds per pair")
	leakEvery := flag.Duration("leak-every", 10*time.Second, "time between leak batches")
	leakCount := flag.Int("leak-count", 7, "goroutines leaked per batch")
	flag.Parse()
	perTick := *rate / 200 // pairs per 10 ms
	if perTick < 1 {
		perTick = 1
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stop := make(chan struct{})
	spawnerDone := make(chan struct{})
	fmt.Printf("churn pid=%d rate=%d leak-every=%s leak-count=%d\n", os.Getpid(), perTick*200,
		*leakEvery, *leakCount)

	go func() { // idle:spawner
		defer close(spawnerDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		leakTick := time.NewTicker(*leakEvery)
		defer leakTick.Stop()
		beat := time.NewTicker(time.Second)
		defer beat.Stop()
		n := 0
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				spawn(perTick, *rounds)
			case <-leakTick.C:
				leakBatch(*leakCount)
				fmt.Printf("leaked batch=%d total=%d t=%.3f\n", len(leakChans), leaked.Load(),
					time.Since(t0).Seconds())
			case <-beat.C:
				n++
				s, f := started.Load(), finished.Load()
				old := oldestMs()
				check := "ok"
				if bad.Load() != 0 || old >= 5000 || s < f {
					check = "FAIL"
				}
				fmt.Printf("heartbeat n=%d t=%.3f started=%d finished=%d inflight=%d leaked=%d "+
					"goroutines=%d oldest_ms=%d bad=%d check=%s\n", n, time.Since(t0).Seconds(),
					s, f, s-f, leaked.Load(), runtime.NumGoroutine(), old, bad.Load(), check)
			}
		}
	}()

	<-sigs
	close(stop)
	<-spawnerDone
	deadline := time.Now().Add(10 * time.Second)
	for finished.Load() != started.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// Goroutines now: main and the leaks (the signal watcher is not a goroutine in Go >= 1.x
	// when idle, so allow it: fixed = 1 or 2).
	time.Sleep(20 * time.Millisecond)
	g := runtime.NumGoroutine()
	fixed := int64(g) - leaked.Load()
	check := "ok"
	if started.Load() != finished.Load() || bad.Load() != 0 || fixed < 1 || fixed > 2 {
		check = "FAIL"
	}
	fmt.Printf("exit started=%d finished=%d leaked=%d goroutines=%d bad=%d check=%s\n",
		started.Load(), finished.Load(), leaked.Load(), g, bad.Load(), check)
	if check != "ok" {
		os.Exit(1)
	}
}
