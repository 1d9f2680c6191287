package browser_test

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"
)

// Layout checks the browser tests run on the pages they open: measured in
// the page, as the user sees it.

// actionsCellsFillRows checks that every per-row actions cell of the page
// is a table cell as tall as its row, so the row's border runs unbroken.
func actionsCellsFillRows(t *testing.T, ctx context.Context) {
	t.Helper()
	bad, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("td.actions")].flatMap(td => {
		const cell = td.getBoundingClientRect(), row = td.parentElement.getBoundingClientRect();
		const display = getComputedStyle(td).display;
		return display === "table-cell" && Math.abs(cell.height - row.height) < 1 && Math.abs(cell.right - row.right) < 1 ? [] :
			[td.parentElement.className + ": " + display + ", cell " + cell.height + "px high to " + cell.right + ", row " + row.height + "px to " + row.right];
	})`))
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("actions cells that do not fill their rows: %v", bad)
	}
}

// placeholdersFit checks that every visible input's placeholder fits in
// the input, measured in the input's own font, beside a search field's
// clear button.
func placeholdersFit(t *testing.T, ctx context.Context) {
	t.Helper()
	cut, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("input[placeholder], textarea[placeholder]")].filter(e => e.offsetParent !== null).flatMap(e => {
		const cs = getComputedStyle(e), c = document.createElement("canvas").getContext("2d");
		c.font = cs.fontStyle + " " + cs.fontWeight + " " + cs.fontSize + " " + cs.fontFamily;
		// A search field keeps room for its clear button (about 20 px).
		const room = e.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - (e.type === "search" ? 20 : 2);
		const need = c.measureText(e.placeholder).width;
		return need <= room ? [] : ["#" + e.id + ": " + JSON.stringify(e.placeholder) + " needs " + Math.ceil(need) + "px, has " + Math.floor(room)];
	})`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cut) > 0 {
		t.Errorf("placeholders cut off: %v", cut)
	}
}

// cjkTextWhole checks, on a Chinese page, that no table header breaks
// inside a word, and that no select cuts off its chosen option.
func cjkTextWhole(t *testing.T, ctx context.Context) {
	t.Helper()
	bad, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[
		...[...document.querySelectorAll("th")].filter(th => th.offsetParent !== null && th.textContent.trim() && !/\s/.test(th.textContent.trim()) &&
			!(th.querySelector(".sr-only") && th.querySelector(".sr-only").textContent.trim() === th.textContent.trim())).flatMap(th => {
			const r = document.createRange(); r.selectNodeContents(th);
			const lines = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
			return lines.size > 1 ? ["header " + JSON.stringify(th.textContent.trim()) + " on " + lines.size + " lines"] : [];
		}),
		...[...document.querySelectorAll("select")].filter(s => s.offsetParent !== null && s.selectedOptions.length).flatMap(s => {
			const cs = getComputedStyle(s), c = document.createElement("canvas").getContext("2d");
			c.font = cs.fontStyle + " " + cs.fontWeight + " " + cs.fontSize + " " + cs.fontFamily;
			const need = c.measureText(s.selectedOptions[0].textContent).width;
			const room = s.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 20; // the arrow
			return need <= room + 4 ? [] : ["#" + s.id + ": " + JSON.stringify(s.selectedOptions[0].textContent) + " needs " + Math.ceil(need) + "px, has " + Math.floor(room)];
		})]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("%v", bad)
	}
}
