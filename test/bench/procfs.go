//go:build bench

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is USER_HZ, the unit of the CPU times in /proc/<pid>/stat (100 on Linux).
const clockTick = 100

type pstat struct {
	pid, ppid, pgrp int
	// cpu is utime+stime+cutime+cstime in clock ticks: the process's own CPU
	// time plus that of every descendant it has reaped; children is the
	// cutime+cstime part.
	cpu, children uint64
}

func readStat(pid int) (pstat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pstat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return pstat{}, fmt.Errorf("bad stat for %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is state (field 3); field n is f[n-3].
	if len(f) < 15 {
		return pstat{}, fmt.Errorf("short stat for %d", pid)
	}
	num := func(n int) uint64 { v, _ := strconv.ParseUint(f[n-3], 10, 64); return v }
	return pstat{pid: pid, ppid: int(num(4)), pgrp: int(num(5)), cpu: num(14) + num(15) + num(16) + num(17),
		children: num(16) + num(17)}, nil
}

// cpuTime is the CPU time of a live process with nanosecond precision: the
// run time of each of its threads (schedstat) plus its reaped children's
// (clock ticks). A Go agent's threads live as long as the process.
func cpuTime(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	total := time.Duration(st.children) * time.Second / clockTick
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total, nil
}

// sumCPU is the total cpuTime of pids.
func sumCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if d, err := cpuTime(p); err == nil {
			sum += d
		}
	}
	return sum
}

// memStatus is the memory part of /proc/<pid>/status, in KiB.
type memStatus struct {
	RSS, HWM, Anon, File, Shmem int64
}

func readMem(pid int) (memStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	defer f.Close()
	var m memStatus
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n
		case "VmHWM":
			m.HWM = n
		case "RssAnon":
			m.Anon = n
		case "RssFile":
			m.File = n
		case "RssShmem":
			m.Shmem = n
		}
	}
	return m, sc.Err()
}

// smapsByMapping sums Rss (KiB) per mapping name: the binary, [heap],
// [stack], anonymous ("anon"), other files.
func smapsByMapping(pid int) map[string]int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]int64{}
	name := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			// A mapping header: addr perms offset dev inode [path]
			name = "anon"
			if len(fields) >= 6 {
				name = filepath.Base(fields[5])
				if strings.HasPrefix(fields[5], "[") {
					name = fields[5]
				}
			}
			continue
		}
		if fields[0] == "Rss:" && len(fields) >= 2 {
			n, _ := strconv.ParseInt(fields[1], 10, 64)
			out[name] += n
		}
	}
	return out
}

// groupMembers lists the live processes whose process group is one of pgids.
func groupMembers(pgids map[int]bool) map[int][]pstat {
	out := map[int][]pstat{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		if pgids[st.pgrp] {
			out[st.pgrp] = append(out[st.pgrp], st)
		}
	}
	return out
}

// groupCPU is the CPU time (ticks) of each process group: every live member's
// own and reaped-children time. A child's time moves into its parent's
// cutime when it is reaped, so the sum is continuous.
func groupCPU(pgids []int) map[int]uint64 {
	set := map[int]bool{}
	for _, p := range pgids {
		set[p] = true
	}
	out := map[int]uint64{}
	for g, members := range groupMembers(set) {
		for _, m := range members {
			out[g] += m.cpu
		}
	}
	return out
}

// rssSampler samples the resident memory of process groups until stopped:
// the peak of the sum of the members' VmRSS and of their VmHWM (the peak of a
// short-lived child between two samples), and the time-averaged sum of VmRSS.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	// per group
	peakRSS, peakHWM map[int]int64
	sumRSS           map[int]int64
	samples          int
}

func startRSSSampler(pgids []int, every time.Duration, scanGroups bool) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{}),
		peakRSS: map[int]int64{}, peakHWM: map[int]int64{}, sumRSS: map[int]int64{}}
	set := map[int]bool{}
	for _, p := range pgids {
		set[p] = true
	}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			var members map[int][]pstat
			if scanGroups {
				members = groupMembers(set)
			} else {
				members = map[int][]pstat{}
				for p := range set {
					members[p] = []pstat{{pid: p}}
				}
			}
			s.mu.Lock()
			for _, g := range pgids {
				var rss, hwm int64
				for _, m := range members[g] {
					if ms, err := readMem(m.pid); err == nil {
						rss += ms.RSS
						hwm += ms.HWM
					}
				}
				s.sumRSS[g] += rss
				if rss > s.peakRSS[g] {
					s.peakRSS[g] = rss
				}
				if hwm > s.peakHWM[g] {
					s.peakHWM[g] = hwm
				}
			}
			s.samples++
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns, per group, the peak (max of the VmRSS
// and VmHWM sums) and the mean RSS, in KiB.
func (s *rssSampler) finish() (peak, mean map[int]int64) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	peak, mean = map[int]int64{}, map[int]int64{}
	for g, v := range s.peakRSS {
		peak[g] = max(v, s.peakHWM[g])
		if s.samples > 0 {
			mean[g] = s.sumRSS[g] / int64(s.samples)
		}
	}
	return peak, mean
}
