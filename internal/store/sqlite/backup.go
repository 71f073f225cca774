package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrBackupExists is returned by Backup when the destination exists.
var ErrBackupExists = errors.New("sqlite: backup destination exists")

// Backup writes a consistent copy of the database to destPath with
// VACUUM INTO (writers are not blocked; the copy is the state of one read
// transaction) and verifies the copy with PRAGMA integrity_check. It never
// overwrites: an existing destPath is an error.
func (s *Store) Backup(ctx context.Context, destPath string) error {
	if _, err := os.Lstat(destPath); err == nil {
		return fmt.Errorf("%w: %s", ErrBackupExists, destPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, "VACUUM INTO ?", destPath); err != nil {
		return fmt.Errorf("sqlite: backup to %s: %w", destPath, err)
	}
	return verifyCopy(ctx, destPath)
}

func verifyCopy(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return fmt.Errorf("sqlite: open backup %s: %w", path, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("sqlite: integrity_check of %s: %w", path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("sqlite: integrity_check of %s: %w", path, err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: integrity_check of %s: %w", path, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("sqlite: backup %s failed integrity_check: %v", path, problems)
	}
	return nil
}
