// Command lifetimes is the target of gotrace's tail and hist tests and of the tail/hist
// benchmark: goroutines with known lifetimes and park times, started on demand.
//
// It prints "lifetimes pid=N" and "waiting", then waits for a line on stdin (so that a tracer
// can attach first) and runs the mode chosen by -mode:
//
//	scenario   23 goroutines living ~35 ms (one sleep), 11 living ~140 ms (one sleep), 7
//	           parked ~600 ms on a channel receive, closed by a releaser; then it exits.
//	pingpong   two goroutines exchange a token over unbuffered channels (2 parks and 2
//	           wake-ups per round trip), at most -rate round trips per second (0: no limit),
//	           for -duration; then it prints {"mode":...} and exits.
//	churn      goroutines created and exiting (create + exit events) at most -rate per second.
//	deep       400 goroutines sleep twice, the second time i calls deep for the i-th: some of
//	           them grow their stack in gopark's own prologue.
//
// The durations sit just above a power of two nanoseconds (2^25 ns = 33.5 ms, 2^27 = 134 ms,
// 2^29 = 537 ms), so a loaded machine, which can only make them longer, cannot push them into
// the next log2 bucket unless it delays them by about as long again.
//
// Tests find the go statements (site:NAME) and the park sites (park:NAME) by their markers.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

const (
	nShort  = 23
	nMedium = 11
	nLong   = 7

	shortLife  = 35 * time.Millisecond  // bucket [2^25, 2^26) ns = [33.5 ms, 67.1 ms)
	mediumLife = 140 * time.Millisecond // bucket [2^27, 2^28) ns = [134 ms, 268 ms)
	longPark   = 600 * time.Millisecond // bucket [2^29, 2^30) ns = [537 ms, 1.07 s)
)

func short(wg *sync.WaitGroup) {
	defer wg.Done()
	time.Sleep(shortLife) // park:short
}

func medium(wg *sync.WaitGroup) {
	defer wg.Done()
	time.Sleep(mediumLife) // park:medium
}

func long(wg *sync.WaitGroup, parking *sync.WaitGroup, release chan struct{}) {
	defer wg.Done()
	parking.Done()
	<-release // park:long
}

func spawnShort(wg *sync.WaitGroup) {
	for i := 0; i < nShort; i++ {
		wg.Add(1)
		go short(wg) // site:short
	}
}

func spawnMedium(wg *sync.WaitGroup) {
	for i := 0; i < nMedium; i++ {
		wg.Add(1)
		go medium(wg) // site:medium
	}
}

func spawnLong(wg *sync.WaitGroup) {
	release := make(chan struct{})
	var parking sync.WaitGroup
	for i := 0; i < nLong; i++ {
		wg.Add(1)
		parking.Add(1)
		go long(wg, &parking, release) // site:long
	}
	parking.Wait()
	wg.Add(1)
	go releaser(wg, release) // site:releaser
}

func releaser(wg *sync.WaitGroup, release chan struct{}) {
	defer wg.Done()
	time.Sleep(longPark)
	close(release)
}

func scenario() {
	var wg sync.WaitGroup
	spawnLong(&wg)
	spawnMedium(&wg)
	spawnShort(&wg)
	wg.Wait()
	allExited()
	fmt.Printf("done short=%d medium=%d long=%d\n", nShort, nMedium, nLong)
}

const nDeep = 400

// descend calls itself n times, then sleeps. Once a goroutine has its timer, time.Sleep calls
// nothing that checks the stack before gopark, so gopark's prologue is the deepest point; as n
// grows (~40 bytes a call, less than time.Sleep's frame) the end of the stack falls inside
// gopark's prologue for some n: the stack grows there and gopark's first instructions run twice.
//
//go:noinline
func descend(n int, nap time.Duration) {
	if n > 0 {
		descend(n-1, nap)
		return
	}
	time.Sleep(nap) // park:deep
}

func deepOne(wg *sync.WaitGroup, n int) {
	defer wg.Done()
	// The first sleep allocates the goroutine's timer; the second one reuses it.
	time.Sleep(time.Microsecond) // park:timer
	descend(n, 20*time.Millisecond)
}

func deep() {
	var wg sync.WaitGroup
	for i := 0; i < nDeep; i++ {
		wg.Add(1)
		go deepOne(&wg, i) // site:deep
	}
	wg.Wait()
	allExited()
	fmt.Printf("done deep=%d\n", nDeep)
}

// allExited returns once every goroutine but main has exited: wg.Done runs in a deferred call,
// before the goroutine's exit, so without this the program could end before the last exits
// (and their exit events) happen.
func allExited() {
	for runtime.NumGoroutine() > 1 {
		time.Sleep(time.Millisecond)
	}
}

// pace sleeps as needed so that op n happens no earlier than n/rate seconds after start.
func pace(start time.Time, n int64, rate float64) {
	if rate <= 0 || n%256 != 0 {
		return
	}
	due := start.Add(time.Duration(float64(n) / rate * 1e9))
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
}

func pingpong(rate float64, d time.Duration) {
	ping, pong := make(chan int), make(chan int)
	go func() { // site:ponger
		for v := range ping {
			pong <- v
		}
		close(pong)
	}()
	start := time.Now()
	var n int64
	for time.Since(start) < d {
		for i := 0; i < 256; i++ {
			ping <- i
			<-pong
			n++
		}
		pace(start, n, rate)
	}
	close(ping)
	report("pingpong", n, time.Since(start))
}

func churn(rate float64, d time.Duration) {
	start := time.Now()
	var n int64
	var wg sync.WaitGroup
	for time.Since(start) < d {
		for i := 0; i < 256; i++ {
			wg.Add(1)
			go func() { wg.Done() }() // site:churn
			n++
		}
		wg.Wait()
		pace(start, n, rate)
	}
	report("churn", n, time.Since(start))
}

func report(mode string, n int64, took time.Duration) {
	fmt.Printf("{\"mode\":%q,\"ops\":%d,\"seconds\":%.3f,\"ops_per_s\":%.0f,\"ns_per_op\":%.1f}\n",
		mode, n, took.Seconds(), float64(n)/took.Seconds(), float64(took.Nanoseconds())/float64(n))
}

func main() {
	mode := flag.String("mode", "scenario", "scenario, pingpong, churn or deep")
	rate := flag.Float64("rate", 0, "operations per second at most (0: no limit)")
	d := flag.Duration("duration", 5*time.Second, "how long pingpong and churn run")
	flag.Parse()
	fmt.Printf("lifetimes pid=%d\n", os.Getpid())
	fmt.Println("waiting")
	bufio.NewReader(os.Stdin).ReadString('\n')
	switch *mode {
	case "scenario":
		scenario()
	case "pingpong":
		pingpong(*rate, *d)
	case "churn":
		churn(*rate, *d)
	case "deep":
		deep()
	default:
		fmt.Fprintln(os.Stderr, "unknown -mode", *mode)
		os.Exit(2)
	}
}
