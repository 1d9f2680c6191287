package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cairnhq/cairn/consensus"
	"golang.org/x/crypto/argon2"
)

// argon2id parameters: OWASP's recommended minimum (19 MiB, 2 passes, 1 lane).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword returns a PHC-format argon2id hash with a random salt.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches a hash from HashPassword.
func CheckPassword(hash, pw string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// MinPasswordLength is the shortest password a new or changed password may be.
const MinPasswordLength = 12

// Password rules a new password breaks. Each is its own error so the UI can
// name the rule in the reader's language.
var (
	ErrPasswordTooShort = consensus.NewError(consensus.CodeInvalid, "password must be at least %d characters", MinPasswordLength)
	ErrPasswordTooLong  = consensus.NewError(consensus.CodeInvalid, "password must be at most 256 characters")
	ErrPasswordHasName  = consensus.NewError(consensus.CodeInvalid, "password must not contain the user name")
)

// validatePassword checks a new password: length is what matters most, and
// a password that contains the user name is the first thing anyone guesses.
// Only new passwords are checked; older, weaker ones still log in.
func validatePassword(username, pw string) error {
	switch {
	case utf8.RuneCountInString(pw) < MinPasswordLength:
		return ErrPasswordTooShort
	case len(pw) > 256:
		return ErrPasswordTooLong
	case username != "" && strings.Contains(strings.ToLower(pw), strings.ToLower(username)):
		return ErrPasswordHasName
	}
	return nil
}

// Bearer tokens look like cairn_<id>_<secret>. Only sha256(secret) is stored:
// the secret is 32 random bytes, so a slow hash adds nothing.
const tokenPrefix = "cairn_"

func newTokenSecret() (id, secret string, hash []byte) {
	idb, sb := make([]byte, 8), make([]byte, 32)
	_, _ = rand.Read(idb)
	_, _ = rand.Read(sb)
	id, secret = hex.EncodeToString(idb), base64.RawURLEncoding.EncodeToString(sb)
	sum := sha256.Sum256([]byte(secret))
	return id, secret, sum[:]
}

func formatToken(id, secret string) string { return tokenPrefix + id + "_" + secret }

func parseToken(s string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	return id, secret, ok && len(id) == 16 && secret != ""
}

func tokenMatches(t *Token, secret string) bool {
	sum := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(sum[:], t.SecretHash) == 1
}

// newID returns a random 16-hex-digit resource ID.
func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newSetupCode returns a one-time code that is easy to read off a console.
func newSetupCode() string {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:4]) + "-" + string(b[4:])
}

// Errors of a password change.
var (
	ErrCurrentPasswordNeeded = consensus.NewError(consensus.CodeInvalid, "changing your own password needs your current password")
	ErrCurrentPasswordWrong  = consensus.NewError(consensus.CodeForbidden, "the current password is wrong")
)
