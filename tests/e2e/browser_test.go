package e2e

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestStatsPageInChromium drives the stats page in headless Chromium over
// the DevTools protocol: the tables show every proxy and server; putting a
// server in maintenance from the page stops traffic to it. A screenshot is
// saved in tests/artifacts/.
func TestStatsPageInChromium(t *testing.T) {
	t.Parallel()
	browser := needTool(t, "chromium", "chromium")
	_, page, fe, _, _ := statsPageSetup(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 800))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:s3cret"))
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return err
	}), chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS(`#row-be-a`)))
	if err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#row-be-a .status`)))
	if err != nil || status != "UP" {
		t.Errorf("server a shows %q (%v), want UP", status, err)
	}
	tables, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("table.proxy")).map(t => t.id)`))
	if err != nil || strings.Join(tables, ",") != "px-fe,px-admin,px-be" {
		t.Errorf("tables %v (%v), want one per proxy", tables, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#row-be-a select[name=action]`), "maint"),
		chromedp.Click(chromedp.CSS(`#apply-be-a`)),
		chromedp.WaitVisible(chromedp.CSS(`#msg`)),
	); err != nil {
		t.Fatalf("putting a server in maintenance from the page: %v", err)
	}
	msg, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#msg`)))
	status, _ = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#row-be-a .status`)))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
	}
	if status != "MAINT" || !strings.Contains(msg, "maint be/a") {
		t.Errorf("after the click: status %q, message %q", status, msg)
	}
	for range 4 {
		if g := greet(t, fe); g != "b" {
			t.Fatalf("after maintenance from the page, a connection went to %q", g)
		}
	}
	dir := filepath.Join("..", "artifacts")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "stats-page.png"), png, 0o644); err != nil {
		t.Error(err)
	}
}
