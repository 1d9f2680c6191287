package volume

// defaultReplicaFiles is the Host's replica store: the files of replica.go.
func defaultReplicaFiles() replicaFiles {
	return replicaFiles{
		create: CreateReplica,
		open: func(dir string) (Target, error) {
			r, err := OpenReplica(dir)
			if err != nil {
				return nil, err
			}
			return r, nil
		},
		remove: RemoveReplica,
	}
}
