// leakymain leaks 2 goroutines, then ends the way -mode says: "return" from main,
// "exit" through os.Exit(3), "panic" (exit status 2), or "hang" until a signal kills it.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	mode := flag.String("mode", "return", "return | exit | panic | hang")
	flag.Parse()
	ch := make(chan struct{})
	for i := 0; i < 2; i++ {
		go func() { <-ch }() // leak:main
	}
	time.Sleep(400 * time.Millisecond)
	fmt.Println("leakymain ready")
	switch *mode {
	case "exit":
		os.Exit(3)
	case "panic":
		panic("leakymain panics on purpose")
	case "hang":
		time.Sleep(time.Hour)
	}
}
