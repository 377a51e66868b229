package bot

import "strings"

// errorHints says what to do about the error codes the GeminiDB API
// documents (see the vendor's error code tables). The code and message
// are always shown verbatim; a hint is added after them, never instead.
// APIG and APIGW are the same gateway under two names.
var errorHints = func() map[string]string {
	hints := map[string]string{}
	add := func(hint string, codes ...string) {
		for _, c := range codes {
			hints[c] = hint
		}
	}
	add("The instance is busy or not normal: wait until the operation on it ends (see the console), then run the command again.",
		"DBS.200011", "DBS.201000", "DBS.200018", "DBS.200019", "DBS.201015")
	add("The instance does not exist (any more): check its ID or name, and whether it was deleted.",
		"DBS.200002", "DBS.201028", "DBS.280110")
	add("The instance ID is not valid: check it.", "DBS.280404")
	add("The instance is not in this project: check that it belongs to GEMINIDB_PROJECT_ID.", "DBS.200604")
	add("GeminiDB refused the call's parameters: tell the bot's admin (with the request ID); running the command again will not help.",
		"DBS.200001", "DBS.280001", "DBS.201006")
	add("GeminiDB refused the bot's credentials: the bot's admin must check its token or keys.", "DBS.280015", "DBS.280056")
	add("The bot's IAM user lacks a permission for this: the bot's admin must grant it.", "DBS.280032", "DBS.280063")
	add("GeminiDB is throttling calls: try again in a minute.", "DBS.280443", "APIG.0308", "APIGW.0308")
	add("GeminiDB was busy or failed: try again in a few minutes.", "DBS.200998", "DBS.280005")
	add("The bot's GeminiDB token or AK/SK signature is bad or expired: the bot's admin must renew it.", "APIG.0301", "APIGW.0301")
	add("The bot's GeminiDB token must be renewed: the bot's admin must renew it (an IAM login renews itself).", "APIG.0307", "APIGW.0307")
	add("The GeminiDB API was not found: GEMINIDB_ENDPOINT is probably wrong; tell the bot's admin.", "APIG.0101", "APIGW.0101")
	return hints
}()

// errorHint returns what to do about an error code, or "" when the code is
// not documented (the bot's own codes, NOT_SENT and UNKNOWN, explain
// themselves in their message).
func errorHint(code string) string {
	return errorHints[strings.TrimSpace(code)]
}

// withHint appends the hint for code, if any, to a line.
func withHint(line, code string) string {
	if h := errorHint(code); h != "" {
		return line + " :bulb: " + h
	}
	return line
}
