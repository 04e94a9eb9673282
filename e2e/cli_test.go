//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The CLI contract as the root-based suites use it, decoded into the suite's own types (only
// the documented fields), so that the suites test the JSON, not the Go structs behind it.

type cliRequest struct {
	Slot      *int   `json:"slot,omitempty"`
	Datastore string `json:"datastore,omitempty"`
	Confdir   string `json:"confdir,omitempty"`
	SOPIN     string `json:"so_pin,omitempty"`
	UserPIN   string `json:"user_pin,omitempty"`
}

type cliPlan struct {
	Changed     bool     `json:"changed"`
	Slot        int      `json:"slot"`
	TokenType   string   `json:"token_type"`
	Datastore   string   `json:"datastore"`
	Format      string   `json:"format"`
	ByteOrder   string   `json:"byte_order"`
	PINsChecked bool     `json:"pins_checked"`
	ConfDiff    string   `json:"conf_diff"`
	Warnings    []string `json:"warnings"`
	Objects     []struct {
		File    string `json:"file"`
		Label   string `json:"label"`
		Private bool   `json:"private"`
		Format  string `json:"format"`
		Action  string `json:"action"`
	} `json:"objects"`
}

type cliResult struct {
	Changed           bool   `json:"changed"`
	Operation         string `json:"operation"`
	TokenType         string `json:"token_type"`
	ObjectsMigrated   int    `json:"objects_migrated"`
	ObjectsTotal      int    `json:"objects_total"`
	RepositoryChanged bool   `json:"repository_changed"`
	ConfChanged       bool   `json:"conf_changed"`
	ConfDiff          string `json:"conf_diff"`
	Verified          bool   `json:"verified"`
}

func decodeOut[T any](t *testing.T, r toolRun) *T {
	t.Helper()
	v := new(T)
	if err := json.NewDecoder(bytes.NewReader(r.stdout)).Decode(v); err != nil {
		t.Fatalf("%s\ncannot decode stdout as %T: %v", r, v, err)
	}
	return v
}

// lineDiff lists the lines only in a ("-") and only in b ("+"), in order of appearance; a
// crude diff that is enough to tell "one line added" from "file rewritten".
func lineDiff(a, b []byte) (minus, plus []string) {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	// Longest common subsequence, small files only.
	n, m := len(la), len(lb)
	dp := make([][]int, n+1)
	for i := range dp {
		dp[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if la[i] == lb[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case la[i] == lb[j]:
			i, j = i+1, j+1
		case dp[i+1][j] >= dp[i][j+1]:
			minus = append(minus, la[i])
			i++
		default:
			plus = append(plus, lb[j])
			j++
		}
	}
	minus = append(minus, la[i:]...)
	plus = append(plus, lb[j:]...)
	return minus, plus
}

// ---------------------------------------------------------------------------------------
// Counts of objects compared, by producer, migrator and kind, for the logs.

type tallyKey struct{ producer, migrator, kind string }

var (
	tallyMu sync.Mutex
	tally   = map[tallyKey]int{}
)

// count records that every object of l was compared (producer: who made the token; migrator:
// whose output the real library loaded).
func count(producer, migrator string, l listing) {
	tallyMu.Lock()
	defer tallyMu.Unlock()
	for k, n := range l.counts() {
		tally[tallyKey{producer, migrator, k}] += n
	}
}

// tallyReport is the counts as text, one line per producer and migrator.
func tallyReport() string {
	tallyMu.Lock()
	defer tallyMu.Unlock()
	type pm struct{ p, m string }
	lines := map[pm]map[string]int{}
	total := 0
	for k, n := range tally {
		x := pm{k.producer, k.migrator}
		if lines[x] == nil {
			lines[x] = map[string]int{}
		}
		lines[x][k.kind] += n
		total += n
	}
	var keys []pm
	for k := range lines {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].p != keys[j].p {
			return keys[i].p < keys[j].p
		}
		return keys[i].m < keys[j].m
	})
	var b strings.Builder
	fmt.Fprintf(&b, "objects compared with the real openCryptoki: %d\n", total)
	for _, k := range keys {
		var kinds []string
		sum := 0
		for kind, n := range lines[k] {
			kinds = append(kinds, fmt.Sprintf("%s %d", kind, n))
			sum += n
		}
		sort.Strings(kinds)
		fmt.Fprintf(&b, "  made by %-22s migrated by %-24s %3d: %s\n", k.p, k.m, sum, strings.Join(kinds, ", "))
	}
	return b.String()
}
