// workload: the Go programs scripts/bench measures, one mode per workload.
//
// Server handlers: plain (writes a line; net/http itself still starts one goroutine per request,
// the connection's background read) and spawn (the handler also starts one goroutine and waits
// for it, errgroup style: one more goroutine lifecycle per request, the pattern that made the
// old attach cost a lot).
//
// Every mode prints "pid=<PID>" and then waits for SIGUSR1 before it starts measuring, so the
// harness can attach a tracer first. It then runs for -duration and prints one JSON line with
// what it did. The load generator (-mode load) is a separate process: the server alone is traced.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/trace"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type result struct {
	Mode     string  `json:"mode"`
	Ops      int64   `json:"ops"`
	Seconds  float64 `json:"seconds"`
	NsPerOp  float64 `json:"ns_per_op"`
	OpsPerS  float64 `json:"ops_per_s"`
	Errors   int64   `json:"errors"`
	Traced   bool    `json:"go_trace"`
	GoMaxPro int     `json:"-"`
}

//go:noinline
func leaf(i int) int { return i + 1 }

// hook is where the calibration probe goes: not a leaf, so it has Go's usual prologue (stack
// check, then the emulated jbe where gotrace puts its own probes).
//
//go:noinline
func hook(i int) int { return leaf(i) * 2 }

// calibrate calls an empty function in a loop: a uprobe on it measures the floor cost of one
// probe hit (the harness places the probe on an emulated instruction of hook).
func calibrate(d time.Duration) int64 {
	var n int64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for i := 0; i < 10000; i++ {
			hook(i)
		}
		n += 10000
	}
	return n
}

// churn creates goroutines that exit at once, in batches of 1000.
func churn(d time.Duration) int64 {
	var n int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for i := 0; i < 1000; i++ {
			wg.Add(1)
			go func() { wg.Done() }()
		}
		wg.Wait()
		n += 1000
	}
	return n
}

// pingpong bounces a value between two goroutines: every op is two parks and two wake-ups.
func pingpong(d time.Duration) int64 {
	a, b := make(chan int), make(chan int)
	go func() {
		for v := range a {
			b <- v
		}
	}()
	var n int64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for i := 0; i < 1000; i++ {
			a <- i
			<-b
		}
		n += 1000
	}
	close(a)
	return n
}

var served atomic.Int64

func handler(w http.ResponseWriter, r *http.Request) {
	served.Add(1)
	_, _ = io.WriteString(w, "hello from the traced server\n")
}

// spawnHandler starts one goroutine per request and waits for it (errgroup style): a small piece
// of work (a hash of the path) done in the goroutine, its result written by the handler.
func spawnHandler(w http.ResponseWriter, r *http.Request) {
	served.Add(1)
	var wg sync.WaitGroup
	var sum uint32
	wg.Add(1)
	go func() {
		defer wg.Done()
		h := fnv.New32a()
		_, _ = io.WriteString(h, r.URL.Path)
		sum = h.Sum32()
	}()
	wg.Wait()
	_, _ = fmt.Fprintf(w, "hello from the traced server %08x\n", sum)
}

// server serves HTTP on addr and counts requests served during the measured window.
func server(addr string, h http.HandlerFunc, ready chan<- struct{}) int64 {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening=%s\n", ln.Addr())
	go func() { _ = http.Serve(ln, h) }()
	close(ready)
	return 0
}

// load sends requests with a fixed concurrency for a fixed time, then stops by itself.
func load(addr string, conc int, d time.Duration) (int64, int64) {
	tr := &http.Transport{MaxIdleConnsPerHost: conc}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var ok, bad atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for c := 0; c < conc; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				resp, err := client.Get("http://" + addr + "/")
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return ok.Load(), bad.Load()
}

func main() {
	mode := flag.String("mode", "churn", "calibrate | churn | pingpong | server | load")
	handlerName := flag.String("handler", "plain", "server: plain | spawn (a goroutine per request)")
	duration := flag.Duration("duration", 3*time.Second, "measured time")
	addr := flag.String("addr", "127.0.0.1:0", "server address (server, load)")
	conc := flag.Int("c", 8, "load: concurrent connections")
	goTrace := flag.String("trace", "", "write Go's execution trace here while measuring")
	linger := flag.Duration("linger", 0, "stay alive this long after printing the result "+
		"(until SIGTERM), so a tracer can make its final report while the process still exists")
	flag.Parse()

	fmt.Printf("pid=%d\n", os.Getpid())
	ready := make(chan struct{})
	if *mode == "server" {
		h := handler
		switch *handlerName {
		case "plain":
		case "spawn":
			h = spawnHandler
		default:
			fmt.Fprintln(os.Stderr, "unknown handler", *handlerName)
			os.Exit(2)
		}
		server(*addr, h, ready)
	}
	start := make(chan os.Signal, 1)
	signal.Notify(start, syscall.SIGUSR1)
	fmt.Println("waiting")
	<-start

	stopTrace := func() {}
	if *goTrace != "" {
		f, err := os.Create(*goTrace)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := trace.Start(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		stopTrace = func() { trace.Stop(); f.Close() }
	}
	t0 := time.Now()
	var ops, errs int64
	switch *mode {
	case "calibrate":
		ops = calibrate(*duration)
	case "churn":
		ops = churn(*duration)
	case "pingpong":
		ops = pingpong(*duration)
	case "server":
		before := served.Load()
		time.Sleep(*duration)
		ops = served.Load() - before
	case "load":
		ops, errs = load(*addr, *conc, *duration)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", *mode)
		os.Exit(2)
	}
	secs := time.Since(t0).Seconds()
	stopTrace()
	out, _ := json.Marshal(result{Mode: *mode, Ops: ops, Seconds: secs,
		NsPerOp: secs * 1e9 / float64(max64(ops, 1)), OpsPerS: float64(ops) / secs,
		Errors: errs, Traced: *goTrace != ""})
	fmt.Println(string(out))
	if *linger > 0 {
		time.Sleep(*linger) // SIGTERM's default action ends it sooner
	}
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
