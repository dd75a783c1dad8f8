// execer: a program that replaces itself with another one on SIGUSR1, as a self-upgrading
// server does, after making 3 goroutines that never finish.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	for i := 0; i < 3; i++ {
		go func() { <-make(chan int) }()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1)
	fmt.Printf("execer pid=%d\nready\n", os.Getpid())
	<-sigs
	fmt.Println("exec", os.Args[1])
	if err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ()); err != nil {
		fmt.Println("exec failed:", err)
		os.Exit(1)
	}
}
