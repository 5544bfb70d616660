/// The role a node plays in the fleet.
public enum NodeRole: String, Sendable, CaseIterable {
    case shore
    case vessel
}

/// Who may write a field. `vessel` means the vessel the row is routed to.
public enum FieldOwner: String, Sendable, CaseIterable {
    case shore
    case vessel
    case shared
}

/// How the shore decides which vessels receive a row.
public enum RoutingRule: Sendable, Equatable {
    /// The row goes to the vessel whose node id is the value of this column.
    case column(String)
    /// The row follows its parent row in `table`, referenced by the uuid column `via`.
    case parent(table: String, via: String)
    /// Reference data: every vessel receives the row.
    case broadcast
}

/// What a local `DELETE` does on a synced table.
public enum DeletePolicy: String, Sendable, CaseIterable {
    /// The row is kept and marked `is_deleted = true`; the tombstone is synced.
    case tombstone
    /// The `DELETE` is refused with an error.
    case refuse
}

/// Who may delete a row of a synced table (`delete_by`): locally (the capture trigger refuses
/// the `DELETE`) and on receipt (a tombstone from another writer is rejected and reported).
public enum DeletePermission: String, Sendable, CaseIterable {
    /// The row's owner (the default): the shore for a broadcast row; for a routed row, the vessel
    /// it is routed to, and the shore.
    case owner
    /// Only the shore.
    case shore
    /// Any node that holds the row.
    case anyone
}

/// How a tombstone meets a concurrent update.
public enum TombstoneRule: String, Sendable, CaseIterable {
    /// A deleted row stays deleted whatever updates arrive (the default).
    case wins
    /// An update with a later clock than the tombstone brings the row back.
    case revive
}

/// One synced table.
public struct TableConfiguration: Sendable, Equatable {
    /// The sync name of the table, the same on every node (events carry it).
    public var name: String
    /// The local schema that holds the table.
    public var schema: String
    public var route: RoutingRule
    /// Owners of the columns listed explicitly.
    public var owners: [String: FieldOwner]
    /// Owner of every column not listed in `owners`.
    public var defaultOwner: FieldOwner
    public var onDelete: DeletePolicy
    /// Who may delete a row (with `on_delete = "tombstone"`; with `"refuse"` no one may).
    public var deleteBy: DeletePermission
    public var tombstone: TombstoneRule
    /// Apply priority overriding the foreign-key depth (lower applies first).
    public var priority: Int?

    public init(
        name: String, schema: String = "public", route: RoutingRule, owners: [String: FieldOwner] = [:],
        defaultOwner: FieldOwner = .shore, onDelete: DeletePolicy = .tombstone, deleteBy: DeletePermission = .owner,
        tombstone: TombstoneRule = .wins, priority: Int? = nil
    ) {
        self.name = name
        self.schema = schema
        self.route = route
        self.owners = owners
        self.defaultOwner = defaultOwner
        self.onDelete = onDelete
        self.deleteBy = deleteBy
        self.tombstone = tombstone
        self.priority = priority
    }

    /// The owner of `column`.
    public func owner(of column: String) -> FieldOwner { owners[column] ?? defaultOwner }

    /// Whether a node of `role` may delete a row of this table. `routedToWriter` says whether the
    /// row is routed to that node (a vessel); it holds for a vessel's own rows, and is unknown
    /// (nil, taken as yes) where the receiver cannot tell.
    public func allowsDelete(by role: NodeRole, routedToWriter: Bool? = nil) -> Bool {
        guard onDelete == .tombstone else { return false }
        if role == .shore { return true }
        switch deleteBy {
        case .anyone: return true
        case .shore: return false
        case .owner: return route != .broadcast && routedToWriter != false
        }
    }

    /// Who may delete this table's rows, in words, for messages.
    public var deleters: String {
        guard onDelete == .tombstone else { return "no node (on_delete = \"refuse\")" }
        switch deleteBy {
        case .anyone: return "any node (delete_by = \"anyone\")"
        case .shore: return "the shore only (delete_by = \"shore\")"
        case .owner:
            return route == .broadcast ? "the shore only, the owner of broadcast rows (delete_by = \"owner\")"
                : "the shore and the vessel the row is routed to (delete_by = \"owner\")"
        }
    }
}

/// Bounds on what one exchange or batch may hold.
public struct Limits: Sendable, Equatable {
    public var batchEvents: Int = 1000
    public var batchBytes: Int = 1_048_576
    /// The largest single change (a row's captured values) this node accepts, and lets its own
    /// writers make: a larger write is refused by the capture triggers, so that nothing is
    /// accepted locally that could never be delivered. A change larger than `batchBytes`
    /// travels alone in an exchange.
    public var maximumChangeBytes: Int = 16 * 1_048_576
    /// The most a batch may grow to when a vessel adapts its batch size to what the link and
    /// the receiver take (`[vessel] adaptive_batch`); a shore serves and accepts batches up to
    /// these, whatever a vessel asks. `batchEvents` and `batchBytes` are where a vessel starts.
    public var maximumBatchEvents: Int = 1_000
    public var maximumBatchBytes: Int = 1_048_576
    public init() {}
}

/// Shore-only settings.
public struct ShoreConfiguration: Sendable, Equatable {
    public var listen: String
    /// How long the shore keeps events a vessel has not acknowledged, in days.
    public var retentionDays: Int = 30
    /// The most events the shore keeps, whatever the vessels have acknowledged (0: no size
    /// limit). Pruning is safe: a vessel behind what is kept is caught up from table state.
    public var retentionMaxEvents: Int = 10_000_000
    /// PEM certificate chain and private key: with both, the shore serves TLS with HTTP/2 (ALPN)
    /// and HTTP/1.1; without, cleartext HTTP/1.1.
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Bounds of `fleetsync serve` (docs/SCALING.md): connections to PostgreSQL in the pool,
    /// exchanges in progress at once, the deadline of one request (a request past it is answered
    /// `busy` and its database connection closed), the time an idle or silent client connection
    /// is kept, and how long SIGTERM waits for requests in flight before the process ends.
    public var databaseConnections: Int = 20
    public var concurrentExchanges: Int = 64
    /// A request arriving while `concurrentExchanges` are in progress waits for a place in a
    /// FIFO queue of at most `exchangeQueueLength` requests, each for at most
    /// `exchangeQueueSeconds` (0: busy at once); past either, it is answered `busy`. A queued
    /// request holds its HTTP connection and body, no database connection.
    public var exchangeQueueSeconds: Double = 2
    public var exchangeQueueLength: Int = 512
    public var requestTimeoutSeconds: Int = 60
    public var idleTimeoutSeconds: Int = 30
    public var shutdownTimeoutSeconds: Int = 10
    /// Long poll: the longest the shore holds an exchange that asked to wait (0: never; answers
    /// at once), and how many vessels may wait at once per server process (past it, a waiting
    /// request is answered at once). A waiting vessel holds no database connection.
    public var longPollMaxSeconds: Int = 30
    public var longPollMaxWaiters: Int = 10_000
    public init(listen: String) { self.listen = listen }
}

/// Vessel-only settings.
public struct VesselConfiguration: Sendable, Equatable {
    public var shoreURL: String
    /// Seconds between exchanges when nothing is pending.
    public var intervalSeconds: Int = 30
    /// Seconds one exchange may take, connecting included, before it counts as failed.
    public var requestTimeoutSeconds: Int = 120
    /// PEM file of certificates to trust for an https shore_url (default: the system's).
    public var tlsCA: String?
    /// The shore's public identity file (written by `fleetsync keygen` on the shore), pinned:
    /// exchanges are sealed to its key and only answers from its holder are accepted.
    public var shoreIdentity: String?
    /// The daemon exchanges as soon as a transaction that changed a synced table commits (it
    /// watches the capture log), not only every `intervalSeconds`. Off on a metered link that
    /// prefers its interval.
    public var wakeOnChange: Bool = true
    /// When idle, the daemon holds one exchange open (a long poll) instead of sleeping its
    /// interval, so that shore changes arrive as soon as they are made; each poll lasts at most
    /// `interval_seconds` (and the shore's `long_poll_max_seconds`), so that an idle link carries
    /// no more exchanges than with plain polling. Off: the daemon polls every `interval_seconds`.
    public var longPoll: Bool = true
    /// Seconds between verifies the daemon runs by itself (``fleetsync verify``); 0 turns the
    /// schedule off. The daemon also verifies after every catch-up from table state and after
    /// it detects a restored database, whatever this says.
    public var verifyIntervalSeconds: Int = 86_400
    /// Whether the daemon's verifies repair what they find (through the normal apply path). On
    /// by default: a restored vessel's undone rows, and writes that bypassed capture, are only
    /// ever brought back by a repair.
    public var verifyRepair: Bool = true
    /// While a backlog drains, the vessel asks for the next batch before it applies the one it
    /// has (the shore reads ahead of the vessel's cursor), so that the link and both databases
    /// work at once (docs/PROTOCOL.md, *Read-ahead and batch size*). Off: one exchange at a time.
    public var readAhead: Bool = true
    /// While the vessel has more of its own to send than one batch, the next batch is read from
    /// its outbox and sealed while the shore applies the one in flight, and goes out as soon as
    /// that one is acknowledged (docs/PROTOCOL.md, *Send-ahead*). Off: each batch is read after
    /// the one before is acknowledged.
    public var sendAhead: Bool = true
    /// The vessel grows its batches while exchanges are full and quick, and shrinks them when
    /// one fails or is slow, between `[limits] batch_events`/`batch_bytes` and
    /// `max_batch_events`/`max_batch_bytes` (down to 20 KB on a poor link). Off: batches stay at
    /// `batch_events`/`batch_bytes`.
    public var adaptiveBatch: Bool = true
    public init(shoreURL: String) { self.shoreURL = shoreURL }
}

/// A whole node configuration, validated.
public struct FleetSyncConfiguration: Sendable, Equatable {
    public var role: NodeRole
    public var nodeID: String
    public var databaseURL: String
    public var shore: ShoreConfiguration?
    public var vessel: VesselConfiguration?
    public var keysDirectory: String?
    public var limits: Limits
    public var tables: [TableConfiguration]

    public init(
        role: NodeRole, nodeID: String, databaseURL: String, shore: ShoreConfiguration? = nil,
        vessel: VesselConfiguration? = nil, keysDirectory: String? = nil, limits: Limits = Limits(),
        tables: [TableConfiguration]
    ) {
        self.role = role
        self.nodeID = nodeID
        self.databaseURL = databaseURL
        self.shore = shore
        self.vessel = vessel
        self.keysDirectory = keysDirectory
        self.limits = limits
        self.tables = tables
    }

    /// The table with sync name `name`.
    public func table(named name: String) -> TableConfiguration? { tables.first { $0.name == name } }

    /// Columns every synced table carries for FleetSync, managed by it alone.
    public static let trackingColumns: Set<String> = ["id", "sync_version", "is_deleted", "sync_clock"]
}
