/// One versioned step of the `fleetsync` schema. Steps only ever append: an installed database
/// runs the steps above its recorded version, in order, inside the installing transaction.
public struct Migration: Sendable {
    public var version: Int
    public var description: String
    public var statements: [String]

    public init(version: Int, description: String, statements: [String]) {
        self.version = version
        self.description = description
        self.statements = statements
    }
}

extension Migration {
    /// Every migration this build knows, oldest first.
    public static let all: [Migration] = [initial, applyBookkeeping, routing, captureLog, pinnedJSON, shoreIdentity, waitingRoom, security, catchUp, keyRotation]

    /// The version this build installs.
    public static var latestVersion: Int { all.last!.version }

    static let initial = Migration(version: 1, description: "outbox, sync state, quarantine, dead letters, telemetry", statements: [
        """
        CREATE TABLE fleetsync.node (
          singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
          node_id text NOT NULL,
          role text NOT NULL CHECK (role IN ('shore', 'vessel'))
        )
        """,
        // UUIDv7: 48-bit Unix milliseconds, then random bits, version 7 and the RFC 4122 variant.
        """
        CREATE FUNCTION fleetsync.uuidv7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
          SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
            PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
            FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
        $$
        """,
        // The node's Lamport counter. Local writes take the next value; applying a remote change
        // moves it past the change's counter. Per-row max(...) + 1 in the trigger keeps each row's
        // clocks increasing even when the two race.
        "CREATE SEQUENCE fleetsync.lamport AS bigint MINVALUE 1",
        """
        CREATE TABLE fleetsync.outbox (
          seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          pos bigint,
          table_name text NOT NULL,
          row_id uuid NOT NULL,
          op "char" NOT NULL,
          version bigint NOT NULL,
          base_version bigint NOT NULL,
          delta jsonb NOT NULL,
          origin text
        )
        """,
        "CREATE INDEX outbox_pos ON fleetsync.outbox (pos)",
        "ALTER TABLE fleetsync.outbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.01)",
        "CREATE TABLE fleetsync.outbox_counter (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), last_pos bigint NOT NULL)",
        "INSERT INTO fleetsync.outbox_counter (last_pos) VALUES (0)",
        """
        CREATE TABLE fleetsync.synced_table (
          name text PRIMARY KEY,
          schema_name text NOT NULL,
          table_name text NOT NULL
        )
        """,
        """
        CREATE TABLE fleetsync.sync_state (
          peer text PRIMARY KEY,
          cursor bigint NOT NULL DEFAULT 0,
          acknowledged bigint NOT NULL DEFAULT 0,
          last_success timestamptz,
          last_error text,
          last_error_at timestamptz
        )
        """,
        """
        CREATE TABLE fleetsync.schema_quarantine (
          table_name text NOT NULL,
          row_id uuid NOT NULL,
          fields jsonb NOT NULL,
          clocks jsonb NOT NULL,
          reasons jsonb NOT NULL DEFAULT '{}',
          PRIMARY KEY (table_name, row_id)
        )
        """,
        """
        CREATE TABLE fleetsync.dead_letter (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          event jsonb NOT NULL,
          table_name text NOT NULL,
          row_id uuid,
          sql_state text,
          constraint_name text,
          message text NOT NULL,
          attempts integer NOT NULL DEFAULT 1,
          created_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE fleetsync.telemetry (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          kind text NOT NULL,
          detail jsonb NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now(),
          shipped boolean NOT NULL DEFAULT false
        )
        """,
        """
        CREATE TABLE fleetsync.conflict_log (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          table_name text NOT NULL,
          row_id uuid NOT NULL,
          field text NOT NULL,
          kept jsonb NOT NULL,
          discarded jsonb NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE FUNCTION fleetsync.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF current_setting('fleetsync.applying', true) = 'on' THEN RETURN NULL; END IF;
          RAISE EXCEPTION USING ERRCODE = '42501',
            MESSAGE = format('fleetsync: TRUNCATE of synced table %I.%I is refused', TG_TABLE_SCHEMA, TG_TABLE_NAME),
            HINT = 'delete rows with DELETE so that the deletions are synced';
        END
        $$
        """,
    ])
}

extension Migration {
    static let applyBookkeeping = Migration(version: 2, description: "dead letters remember their sender", statements: [
        "ALTER TABLE fleetsync.dead_letter ADD COLUMN sender text",
        "CREATE INDEX telemetry_unshipped ON fleetsync.telemetry (id) WHERE NOT shipped",
    ])
}

extension Migration {
    static let routing = Migration(version: 3, description: "routing of shore events, relayed and saga events, enrolled vessels", statements: [
        // vessel: '*' for broadcast, a vessel id, or NULL for no vessel; set when the event is sequenced.
        "ALTER TABLE fleetsync.outbox ADD COLUMN vessel text, ADD COLUMN clocks jsonb",
        "CREATE INDEX outbox_vessel_pos ON fleetsync.outbox (vessel, pos)",
        "ALTER TABLE fleetsync.outbox_counter ADD COLUMN pruned_below bigint NOT NULL DEFAULT 0",
        """
        CREATE FUNCTION fleetsync.route_event(table_name text, row_id uuid) RETURNS text
        LANGUAGE sql STABLE AS $$ SELECT NULL::text $$
        """,
        """
        CREATE TABLE fleetsync.vessel (
          vessel_id text PRIMARY KEY,
          enrolled_at timestamptz NOT NULL DEFAULT now(),
          identity text
        )
        """,
        "ALTER TABLE fleetsync.sync_state ADD COLUMN status jsonb NOT NULL DEFAULT '{}'",
    ])
}

extension Migration {
    static let captureLog = Migration(version: 4, description: "capture writes to an index-free log that the sequencer moves into the outbox", statements: [
        // No key and no index: a capture trigger's insert here costs about a third of one into
        // the outbox with its identity and three indexes (docs/BENCHMARKS.md). seq is the
        // node's Lamport counter value the write took: the order the sequencer moves rows in.
        // Relayed (R) and saga (O, B) events come this way too, with their clocks, origin and
        // vessel, so that every event keeps that one order.
        """
        CREATE TABLE fleetsync.capture_log (
          seq bigint NOT NULL,
          table_name text NOT NULL,
          row_id uuid NOT NULL,
          op "char" NOT NULL,
          version bigint NOT NULL,
          base_version bigint NOT NULL,
          delta jsonb NOT NULL,
          clocks jsonb,
          origin text,
          vessel text
        )
        """,
        "ALTER TABLE fleetsync.capture_log SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000)",
    ])
}

extension Migration {
    static let pinnedJSON = Migration(version: 5, description: "a value's captured JSON under fixed float and interval settings", statements: [
        // Capture functions call this only when the session's own settings would change a
        // float's or an interval's text (extra_float_digits <= 0, IntervalStyle other than
        // postgres): a function-level SET would cost every captured update (docs/CAPTURE.md).
        """
        CREATE FUNCTION fleetsync.pinned_jsonb(anyelement) RETURNS jsonb LANGUAGE sql STABLE
          SET extra_float_digits = 1 SET intervalstyle = 'postgres'
          AS 'SELECT to_jsonb($1)'
        """,
    ])
}

extension Migration {
    static let shoreIdentity = Migration(version: 6, description: "a vessel remembers the node id of the shore it syncs with", statements: [
        "ALTER TABLE fleetsync.sync_state ADD COLUMN node_id text",
    ])
}

extension Migration {
    static let waitingRoom = Migration(version: 7, description: "events waiting for a row they reference; the highest clock each peer has sent", statements: [
        // An event that cannot apply because a row it references has not arrived yet (or, for
        // an offboarding, a row that references it has not left yet) waits here and is applied
        // again, by itself, after every batch that changed something.
        """
        CREATE TABLE fleetsync.waiting (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          event jsonb NOT NULL,
          table_name text NOT NULL,
          row_id uuid NOT NULL,
          sender text NOT NULL,
          constraint_name text,
          message text NOT NULL,
          attempts integer NOT NULL DEFAULT 1,
          since timestamptz NOT NULL DEFAULT now()
        )
        """,
        // On the shore: the highest clock counter each vessel's own writes carried. A vessel whose
        // clock is below it was restored from a backup and must move its clocks past it.
        "ALTER TABLE fleetsync.sync_state ADD COLUMN max_clock bigint NOT NULL DEFAULT 0",
        // On a vessel: the largest change the shore said it accepts (0 until it has answered).
        "ALTER TABLE fleetsync.sync_state ADD COLUMN max_change_bytes bigint NOT NULL DEFAULT 0",
    ])
}

extension Migration {
    static let catchUp = Migration(version: 11, description: "catch-up from table state: what pruning forgot, per-vessel progress, verify results", statements: [
        // On the shore, written by retention as it prunes: the last pruned position that touched
        // each row (and the vessel that event went to), and each row that left a vessel
        // (offboarding). A vessel whose cursor is below the pruning mark is caught up from these
        // and the table state.
        """
        CREATE TABLE fleetsync.pruned_row (
          table_name text NOT NULL,
          row_id uuid NOT NULL,
          last_pos bigint NOT NULL,
          vessel text,
          PRIMARY KEY (table_name, row_id)
        )
        """,
        "CREATE INDEX pruned_row_pos ON fleetsync.pruned_row (last_pos)",
        """
        CREATE TABLE fleetsync.departure (
          vessel text NOT NULL,
          table_name text NOT NULL,
          row_id uuid NOT NULL,
          pos bigint NOT NULL,
          PRIMARY KEY (vessel, table_name, row_id)
        )
        """,
        // Positions pruned before this version left no trace: a vessel below it gets its whole partition.
        "ALTER TABLE fleetsync.outbox_counter ADD COLUMN tracked_from bigint NOT NULL DEFAULT 0",
        "UPDATE fleetsync.outbox_counter SET tracked_from = pruned_below",
        // One catch-up per vessel: from its cursor (since) to the position it gets at the end
        // (target); the position sent in the last page and the one the vessel confirmed, each as
        // (phase, table rank, row id); counts for status.
        """
        CREATE TABLE fleetsync.catch_up (
          vessel text PRIMARY KEY,
          since bigint NOT NULL,
          target bigint NOT NULL,
          whole boolean NOT NULL,
          total bigint NOT NULL DEFAULT 0,
          page bigint NOT NULL DEFAULT 0,
          sent_phase smallint NOT NULL DEFAULT 0,
          sent_rank integer NOT NULL DEFAULT 0,
          sent_id uuid,
          sent_rows bigint NOT NULL DEFAULT 0,
          sent_removals bigint NOT NULL DEFAULT 0,
          done_phase smallint NOT NULL DEFAULT 0,
          done_rank integer NOT NULL DEFAULT 0,
          done_id uuid,
          done_rows bigint NOT NULL DEFAULT 0,
          done_removals bigint NOT NULL DEFAULT 0,
          started_at timestamptz NOT NULL DEFAULT now(),
          updated_at timestamptz NOT NULL DEFAULT now(),
          finished_at timestamptz
        )
        """,
        // The rows one partial catch-up may send (phase 0 removals, 1 rows), listed when it starts.
        """
        CREATE TABLE fleetsync.catch_up_row (
          vessel text NOT NULL,
          phase smallint NOT NULL,
          rank integer NOT NULL,
          row_id uuid NOT NULL,
          PRIMARY KEY (vessel, phase, rank, row_id)
        )
        """,
        // On a vessel: the catch-up progress the shore last reported, echoed in the next request.
        "ALTER TABLE fleetsync.sync_state ADD COLUMN catch_up jsonb",
        // On a vessel: the last verify's time and result.
        "ALTER TABLE fleetsync.sync_state ADD COLUMN last_verify jsonb",
        // Each repair a verify made, and each refused digest request (on the shore).
        """
        CREATE TABLE fleetsync.verify_log (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          at timestamptz NOT NULL DEFAULT now(),
          kind text NOT NULL,
          table_name text,
          row_id uuid,
          detail jsonb NOT NULL DEFAULT '{}'
        )
        """,
    ])
}

extension Migration {
    static let security = Migration(version: 10, description: "enrolled keys, revocation, single-use challenges, token secret, seen exchange ids, refused requests", statements: [
        // On the shore: each vessel's public keys from its identity file; a revoked vessel's
        // tokens and proofs are refused from its next request; tokens issued before
        // authorized_since (a re-enrollment) are refused.
        """
        ALTER TABLE fleetsync.vessel ADD COLUMN signing_key bytea, ADD COLUMN sealing_key bytea,
          ADD COLUMN revoked_at timestamptz, ADD COLUMN authorized_since timestamptz NOT NULL DEFAULT now()
        """,
        // Single-use challenges, stored so that any server replica can check them.
        "CREATE TABLE fleetsync.auth_challenge (nonce bytea PRIMARY KEY, expires_at timestamptz NOT NULL)",
        "CREATE INDEX auth_challenge_expires ON fleetsync.auth_challenge (expires_at)",
        // The HMAC key of access tokens, shared by every replica through the database.
        "CREATE TABLE fleetsync.auth_secret (id smallint PRIMARY KEY, secret bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
        // Exchange ids seen per vessel, kept longer than a token lives: a replayed sealed request
        // is refused.
        """
        CREATE TABLE fleetsync.seen_exchange (
          vessel text NOT NULL, exchange_id uuid NOT NULL, seen_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (vessel, exchange_id)
        )
        """,
        "CREATE INDEX seen_exchange_at ON fleetsync.seen_exchange (seen_at)",
        // Refused requests and rejected changes, counted per vessel in status.
        """
        CREATE TABLE fleetsync.security_event (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, vessel text, kind text NOT NULL,
          detail text NOT NULL, at timestamptz NOT NULL DEFAULT now()
        )
        """,
        "CREATE INDEX security_event_vessel ON fleetsync.security_event (vessel, at)",
        // On a vessel: the access token it holds and when it stops using it (its own clock).
        "ALTER TABLE fleetsync.sync_state ADD COLUMN token bytea, ADD COLUMN token_expires_at timestamptz",
    ])
}

extension Migration {
    static let keyRotation = Migration(version: 12, description: "key rotation: a vessel's next keys on the shore, the shore's announced identity on a vessel", statements: [
        // On the shore: a vessel's new keys, endorsed by its enrolled key, accepted alongside it
        // until the vessel first authenticates with them; when its current keys were enrolled.
        """
        ALTER TABLE fleetsync.vessel ADD COLUMN next_identity text, ADD COLUMN next_signing_key bytea,
          ADD COLUMN next_sealing_key bytea, ADD COLUMN next_since timestamptz, ADD COLUMN keys_since timestamptz NOT NULL DEFAULT now()
        """,
        // On a vessel: the shore identity it trusts instead of the pinned file (announced by the
        // shore, endorsed by the key trusted before), the fingerprint of the pinned file it
        // descends from, and how many announcements were refused.
        """
        ALTER TABLE fleetsync.sync_state ADD COLUMN shore_identity text, ADD COLUMN shore_identity_root text,
          ADD COLUMN shore_announcements_refused integer NOT NULL DEFAULT 0
        """,
    ])
}
