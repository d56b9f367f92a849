// Command demoapp is the small stateful web service of `make demo`: it
// counts visits and keeps uploaded notes, all in a directory that lives on a
// syncvol volume, so the story can show the data following the service.
//
//	GET  /        "visits=N host=H" and increments the counter
//	GET  /count   the counter, without incrementing it
//	PUT  /notes/X stores the body as note X;  GET /notes/X returns it
//
// Every write is fsynced before it is acknowledged.
package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

var noteName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

type app struct {
	dir  string
	host string
	mu   sync.Mutex
}

func (a *app) count() int {
	b, _ := os.ReadFile(filepath.Join(a.dir, "visits"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// writeSynced replaces name with b and fsyncs it before returning.
func (a *app) writeSynced(name string, b []byte) error {
	tmp := filepath.Join(a.dir, "."+name+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(a.dir, name))
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/count":
		fmt.Fprintf(w, "visits=%d host=%s\n", a.count(), a.host)
	case r.URL.Path == "/":
		a.mu.Lock()
		n := a.count() + 1
		err := a.writeSynced("visits", []byte(strconv.Itoa(n)))
		a.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "visits=%d host=%s\n", n, a.host)
	case strings.HasPrefix(r.URL.Path, "/notes/"):
		name := strings.TrimPrefix(r.URL.Path, "/notes/")
		if !noteName.MatchString(name) {
			http.Error(w, "note names are 1-64 letters, digits, '_' or '-'", http.StatusBadRequest)
			return
		}
		switch r.Method {
		case http.MethodPut, http.MethodPost:
			b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err == nil {
				err = a.writeSynced("note-"+name, b)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintln(w, "stored")
		default:
			b, err := os.ReadFile(filepath.Join(a.dir, "note-"+name))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			w.Write(b)
		}
	default:
		http.NotFound(w, r)
	}
}

func main() {
	dir := os.Getenv("DATA_DIR")
	if dir == "" {
		dir = "/data"
	}
	host, _ := os.Hostname()
	if h := os.Getenv("NODE"); h != "" {
		host = h
	}
	addr := os.Getenv("LISTEN")
	if addr == "" {
		addr = ":8080"
	}
	log.Printf("demoapp on %s, data in %s", addr, dir)
	log.Fatal(http.ListenAndServe(addr, &app{dir: dir, host: host}))
}
