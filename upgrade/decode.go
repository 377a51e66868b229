package upgrade

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// parseAPIError builds an *APIError from a non-2xx answer. It understands
// the GeminiDB body {"error_code","error_msg"}, the batch variant
// "error_message", APIG bodies and Keystone-style {"error":{"message"}}.
func parseAPIError(resp *http.Response, body []byte, method, path string) *APIError {
	e := &APIError{Status: resp.StatusCode, Method: method, Path: path}
	e.RequestID = resp.Header.Get("X-Request-Id")
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Openstack-Request-Id")
	}
	var w struct {
		ErrorCode    flexString      `json:"error_code"`
		ErrorMsg     string          `json:"error_msg"`
		ErrorMessage string          `json:"error_message"`
		Code         flexString      `json:"code"`
		Message      string          `json:"message"`
		Error        json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &w); err == nil {
		e.Code = string(w.ErrorCode)
		if e.Code == "" {
			e.Code = string(w.Code)
		}
		e.Message = firstNonEmpty(w.ErrorMsg, w.ErrorMessage, w.Message)
		if len(w.Error) > 0 {
			var ks struct {
				Code    flexString `json:"code"`
				Message string     `json:"message"`
				Title   string     `json:"title"`
			}
			if json.Unmarshal(w.Error, &ks) == nil {
				if e.Message == "" {
					e.Message = firstNonEmpty(ks.Message, ks.Title)
				}
			} else if e.Message == "" {
				var s string
				if json.Unmarshal(w.Error, &s) == nil {
					e.Message = s
				}
			}
		}
		if e.Code != "" || e.Message != "" {
			return e
		}
	}
	e.Message = snippet(body, 200)
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// snippet returns the start of a non-JSON body on one line, trimmed.
func snippet(b []byte, n int) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return ' '
		}
		return r
	}, string(b))
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return s
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// flexString decodes a JSON string, number, boolean or null into a string,
// because the API's examples sometimes show numbers where the schema says strings.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*f = ""
	case b[0] == '"' && len(b) >= 2 && b[len(b)-1] == '"' && bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b):
		// Most strings have no escape: their bytes are the string. (The
		// document was validated as a whole before its fields were decoded;
		// invalid UTF-8 takes the general path, which replaces it as
		// encoding/json does.) This skips a json.Unmarshal, with its own
		// validation pass, per field of every instance in a page.
		*f = flexString(b[1 : len(b)-1])
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
	case b[0] == '{' || b[0] == '[':
		*f = ""
	default:
		*f = flexString(b)
	}
	return nil
}

// flexBool decodes true/false, "true"/"false" and 0/1.
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(string(s))) {
	case "true", "1", "yes":
		*f = true
	default:
		*f = false
	}
	return nil
}

// flexInt decodes a number or a numeric string.
type flexInt int

func (f *flexInt) UnmarshalJSON(b []byte) error {
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	if s == "" {
		*f = 0
		return nil
	}
	n, err := strconv.ParseFloat(string(s), 64)
	if err != nil {
		return fmt.Errorf("not a number: %q", string(s))
	}
	*f = flexInt(n)
	return nil
}
