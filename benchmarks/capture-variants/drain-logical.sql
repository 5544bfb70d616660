SELECT count(*) FROM pg_logical_slot_get_binary_changes('fleetsync_bench', NULL, NULL, 'proto_version', '1', 'publication_names', 'fleetsync_bench');
