package data

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// youtubeLister lists the uploads of a channel through the YouTube Data API
// v3: channels (id or handle) gives the uploads playlist, playlistItems
// gives its videos, 50 a page.
type youtubeLister struct {
	cfg  YouTubeConfig
	key  string
	doer *retryDoer
	red  *redactor
}

// maxPlaylistPages bounds pagination against a server that never ends it.
const maxPlaylistPages = 2000

func (y *youtubeLister) channelVideos(ctx context.Context, channel string) ([]string, error) {
	q := url.Values{"part": {"contentDetails"}}
	if strings.HasPrefix(channel, "@") {
		q.Set("forHandle", channel)
	} else {
		q.Set("id", channel)
	}
	var ch struct {
		Items []struct {
			ContentDetails struct {
				RelatedPlaylists struct {
					Uploads string `json:"uploads"`
				} `json:"relatedPlaylists"`
			} `json:"contentDetails"`
		} `json:"items"`
	}
	if err := y.get(ctx, "channels", q, &ch); err != nil {
		return nil, fmt.Errorf("youtube channel %s: %w", channel, err)
	}
	if len(ch.Items) == 0 || ch.Items[0].ContentDetails.RelatedPlaylists.Uploads == "" {
		return nil, fmt.Errorf("youtube channel %s: not found or has no uploads playlist", channel)
	}
	playlist := ch.Items[0].ContentDetails.RelatedPlaylists.Uploads
	var ids []string
	seen := map[string]bool{}
	token := ""
	for page := 0; page < maxPlaylistPages; page++ {
		q := url.Values{"part": {"contentDetails"}, "playlistId": {playlist}, "maxResults": {"50"}}
		if token != "" {
			q.Set("pageToken", token)
		}
		var pl struct {
			NextPageToken string `json:"nextPageToken"`
			Items         []struct {
				ContentDetails struct {
					VideoID string `json:"videoId"`
				} `json:"contentDetails"`
			} `json:"items"`
		}
		if err := y.get(ctx, "playlistItems", q, &pl); err != nil {
			return nil, fmt.Errorf("youtube channel %s, playlist %s, page %d: %w", channel, playlist, page+1, err)
		}
		for _, it := range pl.Items {
			id := it.ContentDetails.VideoID
			if id == "" || seen[id] {
				continue
			}
			seen[id] = true
			ids = append(ids, id)
			if y.cfg.MaxVideos > 0 && len(ids) >= y.cfg.MaxVideos {
				return ids, nil
			}
		}
		if pl.NextPageToken == "" || pl.NextPageToken == token {
			return ids, nil
		}
		token = pl.NextPageToken
	}
	return ids, fmt.Errorf("youtube channel %s: more than %d pages", channel, maxPlaylistPages)
}

func (y *youtubeLister) get(ctx context.Context, resource string, q url.Values, out any) error {
	q.Set("key", y.key)
	u := strings.TrimRight(y.cfg.BaseURL, "/") + "/" + resource + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return y.red.err(err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := y.doer.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return y.red.err(err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, y.red.str(errorMessage(body)))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode %s response: %w", resource, err)
	}
	return nil
}
