package data

import (
	"strings"
	"testing"
)

func TestParseTranscriptFile(t *testing.T) {
	tests := []struct {
		name, content string
		want          localTranscript
		wantErr       string
	}{
		{
			name: "a.srt",
			content: "\xef\xbb\xbf1\r\n00:00:01,000 --> 00:00:04,000\r\nHello <i>everyone</i>,\r\nwelcome back.\r\n\r\n" +
				"2\r\n00:00:04,500 --> 00:00:06,000\r\n{\\an8}Today: knees &amp; hips.\r\n\r\n" +
				"3\r\n00:00:06,000 --> 00:00:08,000\r\n42\r\n",
			want: localTranscript{Text: "Hello everyone, welcome back. Today: knees & hips. 42"},
		},
		{
			name: "b.vtt",
			content: "WEBVTT\nKind: captions\nLanguage: en\n\nNOTE a comment\nspanning lines\n\nSTYLE\n::cue { color: red }\n\n" +
				"intro\n00:00:00.000 --> 00:00:02.000 align:start position:0%\nso<00:00:00.500><c> the</c><00:00:01.000><c> knee</c>\n\n" +
				"00:00:02.000 --> 00:00:04.000\nso the knee\nis a hinge joint\n\n" +
				"00:04.000 --> 00:06.000\nis a hinge joint\n",
			want: localTranscript{Text: "so the knee is a hinge joint"},
		},
		{
			name:    "c.txt",
			content: "[00:00:01] First line of talk.\n(0:05) Second  line.\n\n\n00:01:10 - Third paragraph.\n12:30\n",
			want:    localTranscript{Text: "First line of talk.\nSecond line.\n\nThird paragraph."},
		},
		{
			name:    "srt-as.txt",
			content: "1\n00:00:01,000 --> 00:00:02,000\nSaved as text.\n",
			want:    localTranscript{Text: "Saved as text."},
		},
		{
			name:    "d.json",
			content: `{"video_id":"abcdefghijk","title":"Knees","lang":"en","content":[{"text":"Part one.","offset":0},{"text":" Part two. ","offset":10}]}`,
			want:    localTranscript{VideoID: "abcdefghijk", Title: "Knees", Lang: "en", Text: "Part one. Part two."},
		},
		{name: "e.json", content: `"Just a string &amp; more."`, want: localTranscript{Text: "Just a string & more."}},
		{name: "f.json", content: `[{"text":"a"},{"utf8":"b"},"c"]`, want: localTranscript{Text: "a b c"}},
		{name: "g.json", content: `{"events":[{"segs":[{"utf8":"hello"},{"utf8":" world"}]},{"tStartMs":5},{"segs":[{"utf8":"again"}]}]}`, want: localTranscript{Text: "hello world again"}},
		{name: "h.json", content: `{"transcript":"From the transcript key."}`, want: localTranscript{Text: "From the transcript key."}},
		{name: "i.json", content: `{"foo": 1}`, wantErr: "no transcript text"},
		{name: "j.json", content: `{"content": "cut`, wantErr: "decode JSON"},
		{name: "k.doc", content: "x", wantErr: "unsupported transcript type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTranscriptFile(tc.name, []byte(tc.content))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseVideoRef(t *testing.T) {
	const tmpl = "https://www.youtube.com/watch?v={id}"
	tests := []struct {
		in, id, url, err string
	}{
		{"dQw4w9WgXcQ", "dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", ""},
		{"https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=10s", "dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", ""},
		{"https://youtu.be/dQw4w9WgXcQ", "dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", ""},
		{"https://m.youtube.com/shorts/dQw4w9WgXcQ", "dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", ""},
		{"https://www.youtube.com/live/dQw4w9WgXcQ?si=x", "dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", ""},
		{"https://vimeo.com/12345", "url-1f284b6e6ebd", "https://vimeo.com/12345", ""},
		{"not a video", "", "", "neither an 11-character video id nor an http(s) URL"},
		{"ftp://x/y", "", "", "neither"},
	}
	for _, tc := range tests {
		r, err := parseVideoRef(tc.in, tmpl)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseVideoRef(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.ID != tc.id || r.URL != tc.url || r.Input != tc.in {
			t.Errorf("parseVideoRef(%q) = %+v, %v; want id %s url %s", tc.in, r, err, tc.id, tc.url)
		}
	}
}
