package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// statsPageSetup runs a proxy with two servers and a stats page with one
// admin user; it returns the page URL and the proxy's address.
func statsPageSetup(t *testing.T) (d *daemon, page, fe string, a, b *backend) {
	t.Helper()
	a, b = newBackend(t, "a"), newBackend(t, "b")
	fe = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	d = startSluice(t, config(fe, servers(a, b))+fmt.Sprintf(`
listen "admin" {
  mode = "http"
  bind = [%q]
  stats {
    uri     = "/stats"
    refresh = "30s"
    users   = { ops = %q }
    admin   = true
  }
}
`, admin, hash))
	return d, "http://" + admin + "/stats", fe, a, b
}

func get(t *testing.T, u, user, pass string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestStatsPage(t *testing.T) {
	t.Parallel()
	d, page, fe, _, _ := statsPageSetup(t)
	for _, cred := range [][2]string{{"", ""}, {"ops", "wrong"}, {"nobody", "s3cret"}} {
		code, body := get(t, page, cred[0], cred[1])
		if code != 401 || strings.Contains(body, "<table") {
			t.Errorf("credentials %q: %d; want 401 and nothing else", cred, code)
		}
	}
	greet(t, fe)
	code, body := get(t, page, "ops", "s3cret")
	if code != 200 {
		t.Fatalf("with credentials: %d", code)
	}
	if !regexp.MustCompile(`threads \d+, idle \d+%;`).MatchString(body) {
		t.Error("page lacks the threads' idle share")
	}
	for _, want := range []string{`id="px-fe"`, `id="px-be"`, `id="px-admin"`, `id="row-be-a"`, `id="row-be-b"`,
		`id="row-be-BACKEND"`, `<meta http-equiv="refresh" content="30">`, "logged in as ops"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if code, csv := get(t, page+";csv", "ops", "s3cret"); code != 200 || !strings.HasPrefix(csv, "# pxname,svname,") {
		t.Errorf(";csv: %d %.40q", code, csv)
	}
	if code, js := get(t, page+";json", "ops", "s3cret"); code != 200 || !strings.HasPrefix(js, "[[{") {
		t.Errorf(";json: %d %.40q", code, js)
	}

	// An admin action without the form's token is refused.
	post := func(form url.Values) int {
		req, _ := http.NewRequest("POST", page, strings.NewReader(form.Encode()))
		req.SetBasicAuth("ops", "s3cret")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(url.Values{"b": {"be"}, "s": {"a"}, "action": {"maint"}}); code != 403 {
		t.Errorf("POST without token: %d, want 403", code)
	}
	token := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(body)[1]
	if code := post(url.Values{"b": {"be"}, "s": {"a"}, "action": {"maint"}, "csrf": {token}}); code != 303 {
		t.Fatalf("POST with token: %d, want 303", code)
	}
	for range 4 {
		if g := greet(t, fe); g != "b" {
			t.Fatalf("after putting a in maintenance from the page, got %q", g)
		}
	}
	d.waitLog(`stats page action .*user=ops action=maint backend=be server=a`, 2*time.Second)
	_, body = get(t, page, "ops", "s3cret")
	if !regexp.MustCompile(`<tr class="maint" id="row-be-a">`).MatchString(body) {
		t.Error("server a is not shown in maintenance")
	}
}
