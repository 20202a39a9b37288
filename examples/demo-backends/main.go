// Command demo-backends runs small TCP servers for trying sluice: each
// greets a connection with its own address, then echoes what it receives.
// make run starts it beside examples/quickstart.hcl.
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: demo-backends ADDR [ADDR ...]")
		os.Exit(2)
	}
	for _, addr := range os.Args[1:] {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					fmt.Fprintf(c, "hello from backend %s\n", addr)
					io.Copy(c, c)
				}()
			}
		}()
	}
	select {}
}
