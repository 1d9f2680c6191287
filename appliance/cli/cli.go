package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// env is what a command runs with.
type env struct {
	settings Settings
	output   string // "table" or "json"
	stdin    io.Reader
	stdout   io.Writer
	fs       *flag.FlagSet
}

type command struct {
	usage string // arguments, for help
	help  string
	flags func(fs *flag.FlagSet) func(e *env, args []string) error
}

// Main runs the CLI and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// Global flags may come before the noun too (cairn --endpoint URL vm list),
	// as kubectl and the openstack client take them; they are parsed with the
	// command's own flags below.
	globals, args, err := leadingGlobals(args)
	if err != nil {
		fmt.Fprintf(stderr, "cairn: %v; run 'cairn help'\n", err)
		return 2
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	// The longest command name that matches the leading words: "s3 credentials create".
	name, rest := args[0], args[1:]
	for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		if _, ok := commands[name+" "+rest[0]]; !ok && !isPrefixOfCommand(name+" "+rest[0]) {
			break
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "cairn: unknown command %q; run 'cairn help'\n", strings.Join(args[:min(2, len(args))], " "))
		return 2
	}
	e := &env{stdin: stdin, stdout: stdout}
	fs := flag.NewFlagSet("cairn "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&e.settings.Endpoint, "endpoint", "", "API URL, like https://10.0.0.5:8443 (env CAIRN_ENDPOINT)")
	fs.StringVar(&e.settings.Token, "token", "", "API token (env CAIRN_TOKEN)")
	fs.StringVar(&e.settings.CACert, "ca-cert", "", "cluster CA certificate file (env CAIRN_CA_CERT)")
	fs.StringVar(&e.output, "o", "table", "output: table or json")
	e.fs = fs
	run := cmd.flags(fs)
	positional, err := parseInterleaved(fs, append(globals, rest...))
	if err != nil {
		return 2
	}
	if e.output != "table" && e.output != "json" {
		fmt.Fprintf(stderr, "cairn: -o must be table or json\n")
		return 2
	}
	e.settings = e.settings.resolve()
	if err := run(e, positional); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "usage: cairn %s %s\n%s\n", name, cmd.usage, string(ue))
			return 2
		}
		fmt.Fprintf(stderr, "cairn %s: %v\n", name, err)
		return 1
	}
	return 0
}

// globalFlags are the flags every command takes, each with a value.
var globalFlags = map[string]bool{"endpoint": true, "token": true, "ca-cert": true, "o": true}

// leadingGlobals splits the global flags that come before the command name
// off args.
func leadingGlobals(args []string) (globals, rest []string, err error) {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
		name, _, hasValue := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
		if !globalFlags[name] {
			return nil, nil, fmt.Errorf("unknown global flag %s", args[0])
		}
		if hasValue {
			globals, args = append(globals, args[0]), args[1:]
			continue
		}
		if len(args) < 2 {
			return nil, nil, fmt.Errorf("flag %s needs a value", args[0])
		}
		globals, args = append(globals, args[0], args[1]), args[2:]
	}
	return globals, args, nil
}

func isPrefixOfCommand(p string) bool {
	for n := range commands {
		if strings.HasPrefix(n, p+" ") {
			return true
		}
	}
	return false
}

// parseInterleaved lets flags and positional arguments mix, as users expect.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

type usageError string

func (u usageError) Error() string { return string(u) }

func needArgs(args []string, n int, what string) error {
	if len(args) != n {
		return usageError(what)
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "cairn - the Cairn appliance\n\nUsage:\n  cairn agent [flags]            run the node daemon (cairn agent -h)")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, n := range names {
		fmt.Fprintf(tw, "  cairn %s %s\t%s\n", n, commands[n].usage, commands[n].help)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nGlobal flags: --endpoint URL, --token TOKEN, --ca-cert FILE, -o table|json")
}

func (e *env) client() (*client, error) { return newClient(e.settings) }

// print writes v as JSON, or as a table of the given columns.
func (e *env) print(v any, cols []string, row func(i int) []string, n int) error {
	if e.output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for i := 0; i < n; i++ {
		fmt.Fprintln(tw, strings.Join(row(i), "\t"))
	}
	return tw.Flush()
}

// printKV writes one object as JSON or as "key: value" lines.
func (e *env) printKV(v any, pairs [][2]string) error {
	if e.output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	for _, p := range pairs {
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], p[1])
	}
	return tw.Flush()
}

// argAndSecret checks for exactly one argument and --password-stdin, and
// reads the secret.
func (e *env) argAndSecret(args []string, stdin bool, what string) (string, error) {
	if err := needArgs(args, 1, what); err != nil {
		return "", err
	}
	if !stdin {
		return "", usageError("--password-stdin is required")
	}
	return e.readSecret()
}

// readSecrets reads n lines from stdin, none of them empty.
func (e *env) readSecrets(n int) ([]string, error) {
	r := bufio.NewReader(e.stdin)
	out := make([]string, 0, n)
	for range n {
		line, err := r.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return nil, fmt.Errorf("expected %d passwords on standard input, one per line, got %d", n, len(out))
		}
		out = append(out, line)
	}
	return out, nil
}

// readSecret reads one line from stdin, for --password-stdin.
func (e *env) readSecret() (string, error) {
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("no password on standard input")
	}
	return line, nil
}
