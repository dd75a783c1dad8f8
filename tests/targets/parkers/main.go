// parkers: goroutines that park and wake in ways that could fool a tracer reading park state
// from memory, next to one real leak. Each line a test looks for carries a "// park:" marker.
//
//	flicker  two goroutines ping-pong thousands of times a second, parking at the same lines
//	almost   a goroutine parks for -almost (just under the test's threshold), again and again
//	wrap     a goroutine parked at one line wakes every -burst and runs exactly 256 park/wake
//	         cycles (255 sleeps and the receive), so its runtime.g trackingSeq (8 bits) reads the
//	         same at every park there: only waitsince (the GC runs often here) tells it ran
//	leak     3 goroutines blocked forever on a channel nobody sends on
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

var sink []byte

func flicker() {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping { // park: flicker-pong
			pong <- v + 1
		}
	}()
	go func() {
		v := 0
		for {
			ping <- v
			v = <-pong // park: flicker-ping
		}
	}()
}

func almost(d time.Duration) {
	go func() {
		never := make(chan int)
		for {
			select { // park: almost
			case <-never:
			case <-time.After(d):
			}
		}
	}()
}

func wrap(burst time.Duration, cycles *int64) {
	wake := make(chan int)
	go func() {
		for range wake { // park: wrap
			for i := 0; i < 255; i++ {
				time.Sleep(time.Microsecond) // 255 more parks and wake-ups
			}
			atomic.AddInt64(cycles, 1)
		}
	}()
	go func() {
		for {
			time.Sleep(burst)
			wake <- 1
		}
	}()
}

func allocate() {
	// Garbage, so that the GC runs often, as it does in most services.
	go func() {
		for {
			sink = make([]byte, 64<<10)
			time.Sleep(50 * time.Microsecond)
		}
	}()
}

func leak(n int) {
	for i := 0; i < n; i++ {
		go func() {
			<-make(chan int) // park: leak
		}()
	}
}

func main() {
	almostFor := flag.Duration("almost", 1500*time.Millisecond, "park time of the almost goroutine")
	burst := flag.Duration("burst", 300*time.Millisecond, "time between wrap's bursts")
	leaks := flag.Int("leak", 3, "goroutines to leak")
	flag.Parse()
	var cycles int64
	flicker()
	almost(*almostFor)
	wrap(*burst, &cycles)
	allocate()
	leak(*leaks)
	fmt.Printf("parkers pid=%d\nready\n", os.Getpid())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(500 * time.Millisecond)
	for {
		select {
		case <-sigs:
			return
		case <-tick.C:
			fmt.Printf("tick wraps=%d\n", atomic.LoadInt64(&cycles))
		}
	}
}
