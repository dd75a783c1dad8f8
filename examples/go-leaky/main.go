// Command go-leaky is a target program for gotrace. On demand it reproduces
// the well-known goroutine-leak patterns, next to busy goroutines that are
// not leaks.
//
// Every go statement carries a trailing marker comment on its own line:
//
//	// leak:<kind>  makes goroutines that never finish (one go statement per kind)
//	// busy:<name>  a goroutine that keeps working and never parks > 500 ms at a time
//	// idle:<name>  a goroutine parked by design (accept loops, the signal loop)
//
// Tests look the markers up to learn the line of each go statement, so keep
// every go statement, with its marker, on a single line.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// kinds lists the leak kinds in the order of the "batch" line.
var kinds = []string{"recv", "wg", "send", "ctx", "ticker", "http", "mutex"}

// creators maps the function holding each leak go statement to its kind; the
// "created by" lines of runtime.Stack tell which goroutines are leaks.
var creators = map[string]string{
	"main.leakRecv":     "recv",
	"main.leakWG":       "wg",
	"main.leakSend":     "send",
	"main.leakCtx":      "ctx",
	"main.leakTicker":   "ticker",
	"main.leakyHandler": "http",
	"main.leakMutex":    "mutex",
}

var (
	want         = map[string]*int{} // leak counts per batch, from the flags
	tickerPeriod time.Duration

	batchMu sync.Mutex
	batchNo int
	made    = map[string]int{} // leak goroutines made so far, per kind

	droppedCancels []context.CancelFunc // cancel funcs of the ctx leak, never called

	pingpongs atomic.Int64 // exchanges of the pingpong goroutines
	echoes    atomic.Int64 // echoes received by the echo client
	sink      atomic.Uint64

	httpURL    string
	httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	outMu sync.Mutex
)

// say prints one line on stdout with a single write.
func say(format string, args ...any) {
	line := fmt.Sprintf(format, args...) + "\n"
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.WriteString(line)
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "go-leaky: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	start := time.Now()
	for _, k := range kinds {
		want[k] = new(int)
	}
	flag.IntVar(want["recv"], "recv", 0, "goroutines receiving on a channel nobody sends on or closes")
	flag.IntVar(want["wg"], "wg", 0, "goroutines in wg.Wait() on a WaitGroup whose Done is never reached")
	flag.IntVar(want["send"], "send", 0, "goroutines sending on an unbuffered channel nobody receives from")
	flag.IntVar(want["ctx"], "ctx", 0, "goroutines waiting on <-ctx.Done() of a context whose cancel func was dropped")
	flag.IntVar(want["ticker"], "ticker", 0, "goroutines ranging over a ticker that is never stopped")
	flag.IntVar(want["http"], "http", 0, "HTTP requests whose handler leaves a goroutine blocked sending its result")
	flag.IntVar(want["mutex"], "mutex", 0, "goroutines blocked in Lock of a mutex that is never unlocked")
	flag.DurationVar(&tickerPeriod, "ticker-period", time.Hour, "period of the tickers of the ticker leak")
	atStart := flag.Bool("leaks-at-start", false, "make one batch of leaks at start-up")
	onUSR1 := flag.Bool("on-usr1", false, "make one batch of leaks on each SIGUSR1")
	after := flag.Duration("after", 0, "make one batch of leaks after this delay (0 = off)")
	busy := flag.Bool("busy", true, "run the busy goroutines that are not leaks")
	exitAfter := flag.Duration("exit-after", 0, "exit after this delay (0 = run until SIGTERM/SIGINT)")
	dumpAfter := flag.Duration("dump-after", 0, "print the stacks of all goroutines to stderr after this delay (0 = off)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "go-leaky: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	for _, k := range kinds {
		if *want[k] < 0 {
			fmt.Fprintf(os.Stderr, "go-leaky: -%s must not be negative\n", k)
			os.Exit(2)
		}
	}
	if tickerPeriod <= 0 {
		fmt.Fprintln(os.Stderr, "go-leaky: -ticker-period must be positive")
		os.Exit(2)
	}

	say("go-leaky pid=%d go=%s", os.Getpid(), runtime.Version())

	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	var usr1 chan os.Signal
	if *onUSR1 {
		usr1 = make(chan os.Signal, 16)
		signal.Notify(usr1, syscall.SIGUSR1)
	}
	afterC := timerChan(start, *after)
	dumpC := timerChan(start, *dumpAfter)
	exitC := timerChan(start, *exitAfter)

	if err := startHTTPServer(); err != nil {
		fatal("http server: %v", err)
	}
	if *busy {
		if err := startBusy(); err != nil {
			fatal("busy goroutines: %v", err)
		}
	}
	if *atStart || (!*onUSR1 && *after == 0) {
		makeBatch()
	}
	go signalLoop(usr1, afterC, dumpC) // idle:signal
	say("ready")

	tick := time.NewTicker(500 * time.Millisecond)
	for n := 1; ; {
		select {
		case <-tick.C:
			say("tick %d pingpong=%d echoes=%d", n, pingpongs.Load(), echoes.Load())
			n++
		case <-term:
			say("bye")
			os.Exit(0)
		case <-exitC:
			say("bye")
			os.Exit(0)
		}
	}
}

// timerChan returns a channel that fires d after start, or nil when d is 0.
func timerChan(start time.Time, d time.Duration) <-chan time.Time {
	if d <= 0 {
		return nil
	}
	return time.NewTimer(time.Until(start.Add(d))).C
}

// signalLoop makes the batches asked for by SIGUSR1 and -after, and the -dump-after dump.
func signalLoop(usr1 <-chan os.Signal, afterC, dumpC <-chan time.Time) {
	for {
		select {
		case <-usr1:
			makeBatch()
		case <-afterC:
			afterC = nil
			makeBatch()
		case <-dumpC:
			dumpC = nil
			dumpStacks()
		}
	}
}

// ---------------------------------------------------------------- leaks

// makeBatch makes one batch of every requested leak and reports it once every
// goroutine of the batch is parked.
func makeBatch() {
	batchMu.Lock()
	defer batchMu.Unlock()
	batchNo++
	leakRecv(*want["recv"])
	leakWG(*want["wg"])
	leakSend(*want["send"])
	leakCtx(*want["ctx"])
	leakTicker(*want["ticker"])
	leakHTTP(*want["http"])
	leakMutex(*want["mutex"])
	for _, k := range kinds {
		made[k] += *want[k]
	}
	waitParked(made)
	time.Sleep(200 * time.Millisecond)
	var b strings.Builder
	fmt.Fprintf(&b, "batch %d made", batchNo)
	for _, k := range kinds {
		fmt.Fprintf(&b, " %s=%d", k, *want[k])
	}
	say("%s", b.String())
}

// leakRecv: receivers ranging over a channel that nobody sends on or closes.
func leakRecv(n int) {
	jobs := make(chan int)
	for i := 0; i < n; i++ {
		go consume(jobs) // leak:recv
	}
}

func consume(jobs <-chan int) {
	for j := range jobs {
		sink.Add(uint64(j))
	}
}

// leakWG: waiters on a WaitGroup whose Done is never reached.
func leakWG(n int) {
	var wg sync.WaitGroup
	wg.Add(1) // for a worker that was never started: its wg.Done() never runs
	for i := 0; i < n; i++ {
		go func() { wg.Wait() }() // leak:wg
	}
}

// leakSend: senders on an unbuffered channel that nobody receives from.
func leakSend(n int) {
	results := make(chan int)
	for i := 0; i < n; i++ {
		v := i
		go func() { results <- v }() // leak:send
	}
}

// leakCtx: waiters on a child context whose cancel func is dropped.
func leakCtx(n int) {
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		// cancel is kept (which also keeps vet's lostcancel check quiet) but never called.
		droppedCancels = append(droppedCancels, cancel)
		go func() { <-ctx.Done() }() // leak:ctx
	}
}

// leakTicker: goroutines ranging over a ticker that is never stopped.
func leakTicker(n int) {
	for i := 0; i < n; i++ {
		t := time.NewTicker(tickerPeriod)
		go onTick(t) // leak:ticker
	}
}

func onTick(t *time.Ticker) {
	for now := range t.C {
		sink.Add(uint64(now.UnixNano() & 1))
	}
}

// leakHTTP makes n requests to leakyHandler, one after the other.
func leakHTTP(n int) {
	for i := 0; i < n; i++ {
		resp, err := httpClient.Get(fmt.Sprintf("%s/item/%d", httpURL, i))
		if err != nil {
			fatal("http request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	httpClient.CloseIdleConnections()
}

// leakyHandler starts a goroutine that outlives the request: it sends its
// result on an unbuffered channel that nobody reads.
func leakyHandler(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	results := make(chan string)
	go func() { results <- compute(path) }() // leak:http
	// The handler meant to wait for the result (or a timeout) but returns at once.
	w.WriteHeader(http.StatusAccepted)
	io.WriteString(w, "accepted\n")
}

func compute(s string) string {
	return strings.ToUpper(s)
}

// leakMutex: goroutines blocked in Lock of a mutex locked once and never unlocked.
func leakMutex(n int) {
	var mu sync.Mutex
	counter := 0
	mu.Lock() // never unlocked
	for i := 0; i < n; i++ {
		go func() { mu.Lock(); counter++; mu.Unlock() }() // leak:mutex
	}
}

// waitParked waits until, for every kind, the leak goroutines that are
// parked (not running, runnable or in a syscall) number at least want[kind].
func waitParked(want map[string]int) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		have := parkedLeaks()
		done := true
		for _, k := range kinds {
			if have[k] < want[k] {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "go-leaky: warning: leak goroutines not all parked after 10s: have %v, want %v\n", have, want)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// parkedLeaks counts the parked leak goroutines per kind, from runtime.Stack.
func parkedLeaks() map[string]int {
	have := map[string]int{}
	for _, g := range strings.Split(allStacks(), "\n\n") {
		// "goroutine 7 [chan receive, 2 minutes]:" ... "created by main.leakRecv in goroutine 1"
		header := g
		if i := strings.IndexByte(g, '\n'); i >= 0 {
			header = g[:i]
		}
		i, j := strings.IndexByte(header, '['), strings.LastIndexByte(header, ']')
		if i < 0 || j < i {
			continue
		}
		status := strings.TrimSpace(strings.SplitN(header[i+1:j], ",", 2)[0])
		switch status {
		case "running", "runnable", "syscall", "idle", "dead", "copystack", "preempted":
			continue
		}
		c := strings.Index(g, "\ncreated by ")
		if c < 0 {
			continue
		}
		fn := g[c+len("\ncreated by "):]
		if k := strings.IndexAny(fn, " \n"); k >= 0 {
			fn = fn[:k]
		}
		if kind, ok := creators[fn]; ok {
			have[kind]++
		}
	}
	return have
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

func dumpStacks() {
	s := allStacks()
	fmt.Fprintf(os.Stderr, "=== go-leaky stack dump begin ===\n%s\n=== go-leaky stack dump end ===\n", s)
	say("dumped")
}

// ---------------------------------------------------------------- servers

func startHTTPServer() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(leakyHandler), ReadHeaderTimeout: 10 * time.Second}
	srv.SetKeepAlivesEnabled(false)
	httpURL = "http://" + ln.Addr().String()
	go srv.Serve(ln) // idle:http
	return nil
}

// ---------------------------------------------------------------- busy goroutines

func startBusy() error {
	ping, pong := make(chan int), make(chan int)
	for i := 0; i < 2; i++ {
		go pingPong(i == 0, ping, pong) // busy:pingpong
	}
	for i := 0; i < 3; i++ {
		go sleeper(i) // busy:sleeper
	}
	if err := startEcho(); err != nil {
		return err
	}
	go churn() // busy:churn
	return startNetCompute()
}

// pingPong bounces a value over unbuffered channels in bursts of 2000
// exchanges separated by 20 ms sleeps. The responder answers every ping.
func pingPong(responder bool, ping, pong chan int) {
	if responder {
		for v := range ping {
			pong <- v + 1
		}
		return
	}
	for {
		for i := 0; i < 2000; i++ {
			ping <- i
			<-pong
			pingpongs.Add(1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sleeper waits 100 ms at a time with time.Sleep, time.After or a reset timer.
func sleeper(mode int) {
	const d = 100 * time.Millisecond
	t := time.NewTimer(d)
	for {
		switch mode {
		case 0:
			time.Sleep(d)
		case 1:
			<-time.After(d)
		default:
			<-t.C
			t.Reset(d)
		}
		sink.Add(1)
	}
}

// startEcho starts a TCP echo server on loopback and one client sending a
// line every 50 ms.
func startEcho() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go echoAccept(ln) // idle:echo
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	go echoClient(c) // busy:net
	return nil
}

func echoAccept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go echoConn(c) // busy:netecho
	}
}

func echoConn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, line); err != nil {
			return
		}
	}
}

func echoClient(c net.Conn) {
	r := bufio.NewReader(c)
	for i := 0; ; i++ {
		time.Sleep(50 * time.Millisecond)
		if _, err := fmt.Fprintf(c, "ping %d\n", i); err != nil {
			fatal("echo client: %v", err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			fatal("echo client: %v", err)
		}
		echoes.Add(1)
	}
}

// churn starts 50 short-lived goroutines every 100 ms.
func churn() {
	for {
		time.Sleep(100 * time.Millisecond)
		for i := 0; i < 50; i++ {
			go churnWork(i) // busy:churnworker
		}
	}
}

func churnWork(seed int) {
	x := uint64(seed)
	for j := uint64(0); j < 1000; j++ {
		x = x*31 + j
	}
	sink.Add(x & 1)
}

// computeWaiting is set while netCompute waits for its wake-up byte.
var computeWaiting atomic.Bool

// startNetCompute connects a reader (netCompute) and a writer (netWriter) over
// a loopback TCP connection; the listener is closed once they are connected.
func startNetCompute() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	w, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	r, err := ln.Accept()
	if err != nil {
		return err
	}
	go netCompute(r) // busy:netcompute
	go netWriter(w)  // busy:netwriter
	return nil
}

// netCompute waits (in IO wait, at most about 300 ms) for one byte, then
// computes for 4 s without parking, forever.
func netCompute(c net.Conn) {
	b := make([]byte, 1)
	for {
		computeWaiting.Store(true)
		if _, err := c.Read(b); err != nil {
			fatal("netcompute: %v", err)
		}
		computeWaiting.Store(false)
		sink.Store(spin(4 * time.Second))
	}
}

// spin does pure CPU work for d: no channels, no sleeps, no syscalls, no allocation.
func spin(d time.Duration) uint64 {
	deadline := time.Now().Add(d)
	x := uint64(88172645463325252)
	for {
		for i := 0; i < 1<<14; i++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
		}
		if !time.Now().Before(deadline) {
			return x
		}
	}
}

// netWriter wakes netCompute: every 300 ms, if it is waiting, write one byte.
func netWriter(c net.Conn) {
	b := []byte{1}
	for {
		time.Sleep(300 * time.Millisecond)
		if computeWaiting.Load() {
			if _, err := c.Write(b); err != nil {
				fatal("netwriter: %v", err)
			}
		}
	}
}
