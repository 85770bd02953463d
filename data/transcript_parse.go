package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/fungtrain/fungtrain/internal/jsonl"
)

// localTranscript is what a local transcript file yields.
type localTranscript struct {
	Text, VideoID, Title, Lang string
}

// transcriptExts are the local file types read, in this priority.
var transcriptExts = []string{".txt", ".srt", ".vtt", ".json"}

var (
	cueTimingRE = regexp.MustCompile(`^\s*(?:\d+:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?\s*-->\s*(?:\d+:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?`)
	tagRE       = regexp.MustCompile(`<[^>]*>|\{\\[^}]*\}`)
	// A leading timestamp on a plain-text line: "[00:01:02] ", "(1:02) ",
	// "00:01:02 - ", "1:02 ".
	lineStampRE = regexp.MustCompile(`^\s*[\[(]?(?:\d+:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?[\])]?\s*(?:[-–—:|]\s*)?`)
	spacesRE    = regexp.MustCompile(`[ \t\f\v\x{a0}]+`)
)

// parseTranscriptFile turns the content of a local transcript file into
// plain text, dropping cue numbers, timings and markup. The file must be
// UTF-8 (a byte-order mark is dropped): text in another encoding would
// reach the dataset as U+FFFD.
func parseTranscriptFile(name string, b []byte) (localTranscript, error) {
	b = bytes.TrimPrefix(b, []byte(jsonl.BOM))
	if err := jsonl.CheckUTF8(b); err != nil {
		return localTranscript{}, fmt.Errorf("%w (save the file as UTF-8)", err)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".srt":
		return localTranscript{Text: parseSubtitles(string(b), false)}, nil
	case ".vtt":
		return localTranscript{Text: parseSubtitles(string(b), true)}, nil
	case ".txt":
		if hasCueTimings(string(b)) { // subtitles saved as .txt
			return localTranscript{Text: parseSubtitles(string(b), false)}, nil
		}
		return localTranscript{Text: parsePlainText(string(b))}, nil
	case ".json":
		return parseTranscriptJSON(b, "content")
	}
	return localTranscript{}, fmt.Errorf("unsupported transcript type %q (want .txt, .srt, .vtt or .json)", filepath.Ext(name))
}

// parseSubtitles reads SRT or WebVTT. Consecutive repeated lines (rolling
// auto-captions) are kept once.
func parseSubtitles(s string, vtt bool) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	var out []string
	last := ""
	skipBlock := false // inside a WEBVTT header, NOTE, STYLE or REGION block
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(strings.ReplaceAll(lines[i], "\r", ""))
		if line == "" {
			skipBlock = false
			continue
		}
		if skipBlock {
			continue
		}
		if vtt && (strings.HasPrefix(line, "WEBVTT") || line == "NOTE" || strings.HasPrefix(line, "NOTE ") ||
			line == "STYLE" || line == "REGION") {
			skipBlock = true
			continue
		}
		if cueTimingRE.MatchString(line) {
			continue
		}
		// A cue number (SRT) or cue identifier (VTT) is the line right before
		// a timing line.
		if i+1 < len(lines) && cueTimingRE.MatchString(lines[i+1]) {
			continue
		}
		text := cleanCueText(line)
		if text == "" || text == last {
			continue
		}
		out = append(out, text)
		last = text
	}
	return strings.Join(out, " ")
}

func cleanCueText(s string) string {
	s = tagRE.ReplaceAllString(s, "")
	s = html.UnescapeString(s)
	return strings.TrimSpace(spacesRE.ReplaceAllString(s, " "))
}

func hasCueTimings(s string) bool {
	for line := range strings.Lines(s) {
		if cueTimingRE.MatchString(line) {
			return true
		}
	}
	return false
}

// parsePlainText drops leading timestamps and timestamp-only lines, and
// keeps paragraphs (blank lines) as single blank lines.
func parsePlainText(s string) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	var out []string
	blank := false
	for _, line := range lines {
		line = strings.TrimSpace(lineStampRE.ReplaceAllString(line, ""))
		line = strings.TrimSpace(spacesRE.ReplaceAllString(line, " "))
		if line == "" {
			blank = len(out) > 0
			continue
		}
		if blank {
			out = append(out, "")
			blank = false
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// parseTranscriptJSON accepts a JSON string; an object with the transcript
// under textField, "content", "text" or "transcript" (a string or a list of
// segments); a list of segments; or YouTube's json3 {"events":[{"segs":...}]}.
// Segments are objects with "text", "utf8" or "content".
func parseTranscriptJSON(b []byte, textField string) (localTranscript, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return localTranscript{}, fmt.Errorf("decode JSON: %w", err)
	}
	var lt localTranscript
	switch x := v.(type) {
	case string:
		lt.Text = x
	case []any:
		lt.Text = joinSegments(x)
	case map[string]any:
		lt.VideoID = firstString(x, "video_id", "videoId", "id")
		lt.Title = firstString(x, "title")
		lt.Lang = firstString(x, "lang", "language")
		found := false
		for _, k := range []string{textField, "content", "text", "transcript"} {
			if k == "" {
				continue
			}
			switch t := x[k].(type) {
			case string:
				lt.Text, found = t, true
			case []any:
				lt.Text, found = joinSegments(t), true
			}
			if found {
				break
			}
		}
		if ev, ok := x["events"].([]any); ok && !found {
			var parts []string
			for _, e := range ev {
				if m, ok := e.(map[string]any); ok {
					if segs, ok := m["segs"].([]any); ok {
						parts = append(parts, joinSegments(segs))
					}
				}
			}
			lt.Text, found = strings.Join(parts, " "), true
		}
		if !found {
			return lt, errors.New(`no transcript text: want a string, a list of segments, or an object with "content", "text" or "transcript"`)
		}
	default:
		return lt, fmt.Errorf("unexpected JSON %T", v)
	}
	lt.Text = strings.TrimSpace(spacesRE.ReplaceAllString(html.UnescapeString(lt.Text), " "))
	return lt, nil
}

func joinSegments(segs []any) string {
	var parts []string
	for _, s := range segs {
		switch t := s.(type) {
		case string:
			parts = append(parts, t)
		case map[string]any:
			if txt := firstString(t, "text", "utf8", "content"); strings.TrimSpace(txt) != "" {
				parts = append(parts, strings.TrimSpace(txt))
			}
		}
	}
	return strings.Join(parts, " ")
}

func firstString(m map[string]any, keys ...string) string {
	for _, k := range keys {
		if s, ok := m[k].(string); ok && s != "" {
			return s
		}
	}
	return ""
}
