// Command echo is the harness's test program: a server that answers every TCP
// connection with its name, and a probe that dials one.
//
//	echo --bind 10.200.1.11:7000 --name node1
//	echo --probe 10.200.1.12:7000 --timeout 500ms   # exit 0 and print the name, or exit 1
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run() error {
	bind := flag.String("bind", "", "serve on this address")
	name := flag.String("name", "", "name to answer with")
	probe := flag.String("probe", "", "dial this address, print its answer and exit")
	timeout := flag.Duration("timeout", time.Second, "probe timeout")
	flag.Parse()

	switch {
	case *probe != "":
		answer, err := ask(*probe, *timeout)
		if err != nil {
			return err
		}
		fmt.Println(answer)
		return nil
	case *bind != "":
		return serve(*bind, *name)
	default:
		return errors.New("need --bind or --probe")
	}
}

func serve(addr, name string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Printf("listening on %s as %s\n", ln.Addr(), name)
	for {
		conn, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		fmt.Fprintln(conn, name)
		conn.Close()
	}
}

func ask(addr string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", addr, err)
	}
	return strings.TrimSpace(line), nil
}
