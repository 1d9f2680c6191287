package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// S3Credential is an S3 access key pair of a user in a project. SigV4 needs
// the secret itself on the server to verify signatures, so it is kept in the
// replicated state (like the cluster CA key) and never returned after
// creation.
type S3Credential struct {
	ID        string    `json:"access_key"`
	Secret    string    `json:"secret_key,omitempty"`
	UserID    string    `json:"user_id"`
	ProjectID string    `json:"project_id"`
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"`
}

// S3 credential commands.
const (
	MsgCreateS3Credential consensus.MessageType = 51
	MsgDeleteS3Credential consensus.MessageType = 52
)

const tS3Creds = "s3_credentials"

func registerS3(r *consensus.Registry) {
	consensus.RegisterTable[S3Credential](r, tableWithUser(tS3Creds))
	consensus.Handle(r, MsgCreateS3Credential, "CreateS3Credential", func(tx *consensus.Tx, c *S3Credential) (any, error) {
		if consensus.First[User](tx.Txn, tUsers, "id", c.UserID) == nil {
			return nil, notFound("user", c.UserID)
		}
		if consensus.First[Project](tx.Txn, tProjects, "id", c.ProjectID) == nil {
			return nil, notFound("project", c.ProjectID)
		}
		row := *c
		row.Version = tx.Index
		return &row, tx.Insert(tS3Creds, &row)
	})
	consensus.Handle(r, MsgDeleteS3Credential, "DeleteS3Credential", func(tx *consensus.Tx, c *deleteCmd) (any, error) {
		cur := consensus.First[S3Credential](tx.Txn, tS3Creds, "id", c.ID)
		if cur == nil {
			return nil, notFound("S3 credential", c.ID)
		}
		return nil, tx.Delete(tS3Creds, cur)
	})
}

// CreateS3Credential issues an access key pair for the caller in a project
// they have a role in. The secret is returned once.
func (s *Service) CreateS3Credential(ctx context.Context, p *Principal, projectRef string) (*S3Credential, error) {
	const action = "s3.credential.create"
	if p.Delegated() {
		return nil, s.deny(ctx, p, action, projectRef, "", errDelegatedCredential)
	}
	pr, err := s.GetProject(p, projectRef)
	if err != nil {
		return nil, s.deny(ctx, p, action, projectRef, "", err)
	}
	ak, sk := make([]byte, 15), make([]byte, 30)
	_, _ = rand.Read(ak)
	_, _ = rand.Read(sk)
	c := S3Credential{
		ID:        "CRN" + strings.ToUpper(base32NoPad(ak)),
		Secret:    base64.RawURLEncoding.EncodeToString(sk),
		UserID:    p.User.ID,
		ProjectID: pr.ID,
		CreatedAt: s.cfg.Now().UTC(),
	}
	var out S3Credential
	s.neg.forget("s3 " + c.ID)
	if err := s.mutate(ctx, p, action, c.ID, pr.ID, MsgCreateS3Credential, c, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListS3Credentials lists the caller's access keys (all for cluster admins), without secrets.
func (s *Service) ListS3Credentials(p *Principal) []S3Credential {
	cs := list[S3Credential](s.read(), tS3Creds, func(c *S3Credential) bool { return p.IsClusterAdmin() || c.UserID == p.User.ID })
	for i := range cs {
		cs[i].Secret = ""
	}
	return cs
}

// DeleteS3Credential revokes an access key: one's own, or any as cluster admin.
func (s *Service) DeleteS3Credential(ctx context.Context, p *Principal, accessKey string) error {
	const action = "s3.credential.delete"
	c := consensus.First[S3Credential](s.read(), tS3Creds, "id", accessKey)
	if c == nil || (!p.IsClusterAdmin() && c.UserID != p.User.ID) {
		return s.deny(ctx, p, action, accessKey, "", notFound("S3 credential", accessKey))
	}
	return s.mutate(ctx, p, action, accessKey, c.ProjectID, MsgDeleteS3Credential, deleteCmd{ID: accessKey}, nil)
}

// ResolveS3 returns the principal, secret and project of an access key, for
// the S3 gateway. A key created a moment ago on another node is looked up
// again after a linearizable read; an unknown one is remembered briefly
// (see confirmMissing).
func (s *Service) ResolveS3(ctx context.Context, accessKey string) (*Principal, *S3Credential, error) {
	c := consensus.First[S3Credential](s.read(), tS3Creds, "id", accessKey)
	if c == nil {
		if _, err := s.confirmMissing(ctx, "s3 "+accessKey, func() bool {
			c = consensus.First[S3Credential](s.read(), tS3Creds, "id", accessKey)
			return c != nil
		}); err != nil {
			return nil, nil, err
		}
	}
	if c == nil {
		return nil, nil, ErrUnauthenticated
	}
	p, err := s.principalFor(c.UserID)
	if err != nil {
		return nil, nil, err
	}
	return p.ScopedTo(c.ProjectID), c, nil
}

func base32NoPad(b []byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	var out []byte
	var acc, bits uint
	for _, x := range b {
		acc = acc<<8 | uint(x)
		bits += 8
		for bits >= 5 {
			bits -= 5
			out = append(out, alphabet[(acc>>bits)&31])
		}
	}
	return string(out)
}
