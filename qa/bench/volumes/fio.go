package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// job is one fio workload, run the same way against the volume and the
// local file.
type job struct {
	name  string // for the report
	rw    string // fio's --rw
	bs    int64  // bytes per I/O
	depth int    // fio's --iodepth
	// syncEvery is a flush (target.flush) after this many writes (0:
	// none). The volume acknowledges a write once every in-sync replica has
	// it in its page cache and makes it durable on FLUSH (every replica
	// fdatasyncs), as a disk with a volatile write cache does; a guest's
	// filesystem flushes at its commits. So both sides flush at the same
	// points: on the volume an NBD FLUSH, on the local file an fdatasync.
	syncEvery int
}

func (j job) write() bool { return j.rw == "write" || j.rw == "randwrite" }

// jobs are issue 16's workloads. QD1 writes flush after every write: the
// latency the issue bounds is a durable write's. The other writes flush
// after every 32, as the layout benchmark (docs/benchmarks.md) does.
var jobs = []job{
	{name: "4 KiB random read, QD1", rw: "randread", bs: 4 << 10, depth: 1},
	{name: "4 KiB random read, QD32", rw: "randread", bs: 4 << 10, depth: 32},
	{name: "4 KiB random write, QD1, flush each", rw: "randwrite", bs: 4 << 10, depth: 1, syncEvery: 1},
	{name: "4 KiB random write, QD32, flush per 32", rw: "randwrite", bs: 4 << 10, depth: 32, syncEvery: 32},
	{name: "1 MiB sequential read, QD8", rw: "read", bs: 1 << 20, depth: 8},
	{name: "1 MiB sequential write, QD8, flush per 32", rw: "write", bs: 1 << 20, depth: 8, syncEvery: 32},
}

// target is where fio does I/O: the volume over NBD, or the local file.
//
// The local file is opened with O_DIRECT (libaio, --direct=1): what a VM
// whose disk is a raw file on this filesystem gets from QEMU with
// cache=none, the usual setting, where the guest's flushes become
// fdatasyncs. The volume's replicas write through their page cache and
// fdatasync on FLUSH, so at the flush points both sides have made the same
// writes durable; between them the local side pays the device for every
// write and the volume does not, which favours the volume for writes. For
// reads the page cache is dropped before each read job on both sides (the
// replicas' files would otherwise be read from memory).
type target struct {
	label string
	args  []string // fio's engine arguments
	// flush is the fio option that makes a write durable: fio's nbd engine
	// sends NBD_CMD_FLUSH for --fsync (it refuses --fdatasync), and QEMU
	// turns a guest's flush into an fdatasync of a raw file, as the
	// replicas do on FLUSH.
	flush string
}

func volumeTarget(uri string) target {
	return target{label: "volume", args: []string{"--ioengine=nbd", "--uri=" + uri}, flush: "--fsync"}
}

func localTarget(path string) target {
	return target{label: "local", args: []string{"--ioengine=libaio", "--direct=1", "--filename=" + path}, flush: "--fdatasync"}
}

// pageCacheTarget is the local file written through the page cache, as the
// replicas write theirs: a second reference for the write jobs. On this
// kind of VM, memory the host has taken back (free page reporting) is
// slow to fault in again, so a write into pages the cache does not hold
// costs the CPU several times what it does on bare metal; the O_DIRECT
// reference never pays that and the volume always does.
func pageCacheTarget(path string) target {
	return target{label: "local, page cache", args: []string{"--ioengine=libaio", "--direct=0", "--filename=" + path}, flush: "--fdatasync"}
}

// result is what one fio run measured for its one direction of I/O.
type result struct {
	iops, mibs float64
	p50, p99   time.Duration // of each I/O, submission to completion
	sync50     time.Duration // of each flush (NBD FLUSH, fdatasync), when the job flushes
	sync99     time.Duration
	elsewhere  float64 // cores the rest of the machine kept busy meanwhile
	nodes      float64 // cores the three nodes kept busy meanwhile
	err        error
}

// ok reports whether the run measured anything.
func (r result) ok() bool { return r.err == nil && r.iops > 0 }

// fioOutput is the part of fio's --output-format=json the benchmark reads.
type fioOutput struct {
	Jobs []struct {
		Error int     `json:"error"`
		Read  fioSide `json:"read"`
		Write fioSide `json:"write"`
		Sync  struct {
			Lat fioLat `json:"lat_ns"`
		} `json:"sync"`
	} `json:"jobs"`
}

type fioSide struct {
	IOPS    float64 `json:"iops"`
	BwBytes float64 `json:"bw_bytes"`
	IOs     int64   `json:"total_ios"`
	Lat     fioLat  `json:"lat_ns"`
}

type fioLat struct {
	Percentile map[string]float64 `json:"percentile"`
}

func (l fioLat) at(p float64) time.Duration {
	return time.Duration(l.Percentile[strconv.FormatFloat(p, 'f', 6, 64)])
}

// fio runs fio with args and decodes its JSON report.
func fio(ctx context.Context, args ...string) (fioOutput, error) {
	var out fioOutput
	args = append(args, "--output-format=json")
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "fio", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	// fio may put notes before the JSON object.
	b := stdout.Bytes()
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	jsonErr := json.Unmarshal(b, &out)
	if runErr == nil && jsonErr == nil && len(out.Jobs) == 1 && out.Jobs[0].Error == 0 {
		return out, nil
	}
	msg := strings.TrimSpace(stderr.String())
	if jsonErr != nil {
		msg += fmt.Sprintf(" (report: %v)", jsonErr)
	}
	return out, fmt.Errorf("fio %s: %v: %s", strings.Join(args, " "), runErr, msg)
}

// fioProbe reads the first 4 KiB of uri: whether an NBD client can open it.
func fioProbe(ctx context.Context, uri string) error {
	_, err := fio(ctx, "--name=probe", "--ioengine=nbd", "--uri="+uri, "--rw=read", "--bs=4k", "--size=4k")
	return err
}

// settings are the fio options every measured run shares.
type settings struct {
	span    int64         // bytes at the start of the target the jobs touch
	runtime time.Duration // measured, after ramp
	ramp    time.Duration
}

// run runs j against t and measures the nodes' and the machine's CPU
// meanwhile.
func (s settings) run(ctx context.Context, j job, t target, pids []int) result {
	if !j.write() {
		dropCaches()
	}
	args := append([]string{"--name=" + j.rw, "--rw=" + j.rw, "--bs=" + strconv.FormatInt(j.bs, 10),
		"--iodepth=" + strconv.Itoa(j.depth), "--size=" + strconv.FormatInt(s.span, 10),
		"--time_based", "--runtime=" + seconds(s.runtime), "--ramp_time=" + seconds(s.ramp),
		"--norandommap", "--randrepeat=0", "--lat_percentiles=1", "--percentile_list=50:99"}, t.args...)
	if j.syncEvery > 0 {
		args = append(args, t.flush+"="+strconv.Itoa(j.syncEvery))
	}
	el, nodes0, kids0, t0 := benchrun.NewElsewhere(pids), benchrun.ProcCPU(pids...), childCPU(), time.Now()
	out, err := fio(ctx, args...)
	wall := time.Since(t0).Seconds()
	r := result{err: err}
	// fio is our child: the machine's "elsewhere" counts it, so take it out.
	r.elsewhere = max(0, (el.Next()-(childCPU()-kids0)).Seconds()/wall)
	r.nodes = (benchrun.ProcCPU(pids...) - nodes0).Seconds() / wall
	if err != nil {
		return r
	}
	jo := out.Jobs[0]
	side := jo.Read
	if j.write() {
		side = jo.Write
	}
	r.iops, r.mibs = side.IOPS, side.BwBytes/(1<<20)
	r.p50, r.p99 = side.Lat.at(50), side.Lat.at(99)
	if j.syncEvery > 0 {
		r.sync50, r.sync99 = jo.Sync.Lat.at(50), jo.Sync.Lat.at(99)
		if r.sync50 == 0 {
			r.err = errors.New("fio reported no flush latencies")
		}
	}
	return r
}

// fill writes bytes [off, off+n) of t sequentially in 1 MiB writes at QD8
// and flushes at the end, and returns MiB/s including the final flush.
func fill(ctx context.Context, t target, off, n int64) (float64, error) {
	start := time.Now()
	_, err := fio(ctx, append([]string{"--name=fill", "--rw=write", "--bs=1M", "--iodepth=8",
		"--offset=" + strconv.FormatInt(off, 10), "--size=" + strconv.FormatInt(n, 10), "--end_fsync=1"}, t.args...)...)
	if err != nil {
		return 0, err
	}
	return float64(n) / (1 << 20) / time.Since(start).Seconds(), nil
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }

// childCPU is the CPU time of this process's children that have exited (fio).
func childCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dropCaches writes back and drops the page cache, so a read job reads the
// disk on both sides; best effort (it needs root).
func dropCaches() bool {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200) == nil
}

// fioVersion is `fio --version`, for the report.
func fioVersion() string {
	out, err := exec.Command("fio", "--version").Output()
	if err != nil {
		return "fio ?"
	}
	return strings.TrimSpace(string(out))
}

// device names the filesystem dir is on, as df does; best effort.
func device(dir string) string {
	out, err := exec.Command("df", "--output=source,fstype,target", dir).Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil || len(lines) < 2 {
		return "?"
	}
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 3 {
		return "?"
	}
	return fmt.Sprintf("%s (%s on %s)", f[0], f[1], f[2])
}

// localFile creates the reference: a sparse file of size bytes in dir.
func localFile(dir string, size int64) (string, error) {
	path := filepath.Join(dir, "local-reference.raw")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return path, f.Truncate(size)
}
