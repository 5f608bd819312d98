//go:build bench

package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Figure 4 comes from the logs of the end-to-end cluster (make e2e / make
// demo), real kubeadm on real nodes: the service manager's unit events (when
// kubestrap was started), the sd_notify datagrams it received (READY=1), the
// kubeadm wrapper's call log (when the kubeadm child started) and the agent's
// own log ("kubeadm finished", when it returned). Both layouts are read: the
// live run directory (nodes/<n>/units/kubestrap/...) and the copy kept after
// teardown ($CACHE/e2e-last-logs/<n>/kubestrap-*.log).

type e2eBoot struct {
	Node, Role  string
	Start       int
	Direct      bool          // the first kubeadm call came without waiting for join info
	StartToKube time.Duration // unit started -> kubeadm child started
	KubeadmTook time.Duration // kubeadm run time (as the agent measured it)
	ExitToReady time.Duration // kubeadm returned -> READY=1
	HasReady    bool
}

type e2eResult struct {
	Dir      string
	Version  string
	ModTime  time.Time
	Boots    []e2eBoot
	Problems []string
}

func firstExisting(paths ...string) string {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func readJSONLines(path string) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func parseTime(v any) (time.Time, bool) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, false
	}
	for _, layout := range []string{time.RFC3339Nano, zapISO8601} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

type consoleEntry struct {
	At     time.Time
	Msg    string
	Fields map[string]any
}

// readConsoleLog parses the agent's console log: ts, level, [logger,] msg, {fields}.
func readConsoleLog(path string) []consoleEntry {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []consoleEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), "\t")
		if len(parts) < 3 {
			continue
		}
		t, ok := parseTime(parts[0])
		if !ok {
			continue
		}
		e := consoleEntry{At: t}
		last := parts[len(parts)-1]
		if strings.HasPrefix(last, "{") {
			_ = json.Unmarshal([]byte(last), &e.Fields)
			parts = parts[:len(parts)-1]
		}
		e.Msg = parts[len(parts)-1]
		out = append(out, e)
	}
	return out
}

func analyzeE2E(dir string) *e2eResult {
	res := &e2eResult{Dir: dir}
	nodesDir := dir
	if fi, err := os.Stat(filepath.Join(dir, "nodes")); err == nil && fi.IsDir() {
		nodesDir = filepath.Join(dir, "nodes")
	}
	ents, err := os.ReadDir(nodesDir)
	if err != nil {
		res.Problems = append(res.Problems, err.Error())
		return res
	}
	for _, ent := range ents {
		if !ent.IsDir() {
			continue
		}
		nd := filepath.Join(nodesDir, ent.Name())
		unit := filepath.Join(nd, "units", "kubestrap")
		events := firstExisting(filepath.Join(nd, "kubestrap-events.log"), filepath.Join(unit, "events.log"))
		notify := firstExisting(filepath.Join(nd, "kubestrap-notify.log"), filepath.Join(unit, "notify.log"))
		output := firstExisting(filepath.Join(nd, "kubestrap-output.log"), filepath.Join(unit, "output.log"))
		calls := firstExisting(filepath.Join(nd, "kubeadm-calls.log"))
		if events == "" || notify == "" || output == "" || calls == "" {
			continue
		}
		if fi, err := os.Stat(notify); err == nil && fi.ModTime().After(res.ModTime) {
			res.ModTime = fi.ModTime()
		}
		res.Boots = append(res.Boots, analyzeNode(ent.Name(), events, notify, output, calls, res)...)
	}
	return res
}

type kubeCall struct {
	At  time.Time
	Sub string
}

func analyzeNode(node, eventsPath, notifyPath, outputPath, callsPath string, res *e2eResult) []e2eBoot {
	type start struct {
		n  int
		at time.Time
	}
	var starts []start
	for _, e := range readJSONLines(eventsPath) {
		if e["event"] != "started" {
			continue
		}
		if t, ok := parseTime(e["time"]); ok {
			starts = append(starts, start{n: num(e["start"]), at: t})
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i].at.Before(starts[j].at) })
	var calls []kubeCall
	if f, err := os.Open(callsPath); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			ts, sub, _ := strings.Cut(sc.Text(), " ")
			if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				calls = append(calls, kubeCall{At: t, Sub: sub})
			}
		}
		f.Close()
	}
	notes := readJSONLines(notifyPath)
	logs := readConsoleLog(outputPath)
	role := "worker"
	for _, l := range logs {
		if l.Msg == "kubestrap starting" {
			if v, ok := l.Fields["version"].(string); ok && res.Version == "" {
				res.Version = v
			}
			if r, ok := l.Fields["role"].(string); ok {
				role = r
			}
		}
	}
	var boots []e2eBoot
	for i, s := range starts {
		end := time.Now().Add(time.Hour)
		if i+1 < len(starts) {
			end = starts[i+1].at
		}
		in := func(t time.Time) bool { return !t.Before(s.at) && t.Before(end) }
		b := e2eBoot{Node: node, Role: role, Start: s.n}
		var first *kubeCall
		for j := range calls {
			c := &calls[j]
			if in(c.At) && (strings.HasPrefix(c.Sub, "join") || strings.HasPrefix(c.Sub, "init")) {
				first = c
				break
			}
		}
		var waiting, joining, ready time.Time
		for _, m := range notes {
			if num(m["start"]) != s.n {
				continue
			}
			t, ok := parseTime(m["time"])
			if !ok {
				continue
			}
			fields, _ := m["fields"].(map[string]any)
			status, _ := fields["STATUS"].(string)
			if waiting.IsZero() && strings.HasPrefix(status, "waiting for join info") {
				waiting = t
			}
			if joining.IsZero() && strings.HasPrefix(status, "joining ") {
				joining = t
			}
			if ready.IsZero() && fields["READY"] == "1" {
				ready = t
			}
		}
		if first == nil {
			continue // a restart of an initialized or joined node: no kubeadm
		}
		b.StartToKube = first.At.Sub(s.at)
		if strings.HasPrefix(first.Sub, "init") {
			b.Direct = true
		} else if !waiting.IsZero() && !joining.IsZero() && joining.Sub(waiting) < time.Second {
			// The first poll found valid join info (the next one comes 75-100%
			// of the poll interval later, at least 1.5 s in the e2e config).
			b.Direct = true
		}
		if !ready.IsZero() {
			// The last successful kubeadm run before READY.
			var exit consoleEntry
			for _, l := range logs {
				if l.Msg == "kubeadm finished" && in(l.At) && !l.At.After(ready) && l.Fields["ok"] == true {
					cmd, _ := l.Fields["command"].(string)
					if cmd == "kubeadm join" || cmd == "kubeadm init" {
						exit = l
					}
				}
			}
			if !exit.At.IsZero() {
				b.HasReady = true
				b.ExitToReady = ready.Sub(exit.At)
				if took, ok := exit.Fields["took"].(float64); ok {
					b.KubeadmTook = time.Duration(took * float64(time.Second))
				}
			}
		}
		boots = append(boots, b)
	}
	return boots
}
