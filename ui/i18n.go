package ui

import (
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Supported languages. The values are BCP 47 tags: they go into <html lang>
// and the lang cookie.
const (
	langEN = "en"
	langZH = "zh-CN"
)

// langCookie remembers the language picked with the switcher in the layout.
const langCookie = "lang"

// catalogs returns every language's messages. The catalogs are built once per
// handler rather than held in package variables, so nothing can mutate them
// behind another handler's back.
func catalogs() map[string]map[string]string {
	en, zh := catalogEN(), catalogZH()
	maps.Copy(en, volumesEN())
	maps.Copy(zh, volumesZH())
	maps.Copy(en, networksEN())
	maps.Copy(zh, networksZH())
	maps.Copy(en, maintenanceEN())
	maps.Copy(zh, maintenanceZH())
	maps.Copy(en, federationEN())
	maps.Copy(zh, federationZH())
	maps.Copy(en, eventsEN())
	maps.Copy(zh, eventsZH())
	for format, text := range errorsZH() {
		zh["fmt."+format] = text // English says the error's own message
	}
	return map[string]map[string]string{langEN: en, langZH: zh}
}

// translator renders message keys in one language.
type translator struct {
	lang string
	msgs map[string]string
}

// T returns the message for key. A missing key shows itself, which the
// catalog tests catch long before a user could see it.
func (t *translator) T(key string) string {
	if s, ok := t.msgs[key]; ok {
		return s
	}
	return key
}

// Tf formats the message for key with args, as fmt.Sprintf does.
func (t *translator) Tf(key string, args ...any) string {
	return fmt.Sprintf(t.T(key), args...)
}

// pickLang chooses the language for a request: an explicit choice in the lang
// cookie wins; otherwise the browser's Accept-Language; otherwise English.
func pickLang(r *http.Request) string {
	if c, err := r.Cookie(langCookie); err == nil {
		if l, ok := normalizeLang(c.Value); ok {
			return l
		}
	}
	for _, tag := range acceptLanguages(r.Header.Get("Accept-Language")) {
		if l, ok := normalizeLang(tag); ok {
			return l
		}
	}
	return langEN
}

// normalizeLang maps a language tag to a supported language. Any Chinese tag
// maps to Simplified Chinese, the only Chinese catalog there is.
func normalizeLang(tag string) (string, bool) {
	tag = strings.ToLower(strings.TrimSpace(tag))
	switch {
	case tag == "en" || strings.HasPrefix(tag, "en-"):
		return langEN, true
	case tag == "zh" || strings.HasPrefix(tag, "zh-"):
		return langZH, true
	}
	return "", false
}

// acceptLanguages returns the tags of an Accept-Language header, most
// preferred first. Tags with q=0 are dropped.
func acceptLanguages(header string) []string {
	type entry struct {
		tag string
		q   float64
	}
	var entries []entry
	for _, part := range strings.Split(header, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if tag == "" {
			continue
		}
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			q = f
		}
		if q > 0 {
			entries = append(entries, entry{tag, q})
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].q > entries[j].q })
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.tag
	}
	return out
}
