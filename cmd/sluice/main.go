// Command sluice is a load balancer for TCP (and, later, HTTP).
package main

import "os"

func main() { os.Exit(sluiceMain(os.Args[1:])) }
