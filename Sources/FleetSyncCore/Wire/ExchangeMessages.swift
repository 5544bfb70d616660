import Foundation

/// What a vessel sends in one exchange: its pending changes and where it stands.
public struct ExchangeRequest: Sendable, Equatable {
    public var vesselID: String
    /// Unique per exchange; sealing binds it (security issue) and logs name it.
    public var exchangeID: UUID
    /// The last shore position this vessel has applied.
    public var cursor: Int64
    /// The vessel's pending events, compacted per row.
    public var events: [ChangeEvent]
    /// The highest vessel outbox position the events cover; the shore echoes it as acknowledged
    /// once it has applied the events (it keeps no filter on positions: applying is idempotent).
    public var upTo: Int64
    /// The vessel's logical clock when it built the request: at least every clock it ever gave
    /// its own writes, unless its database was restored from a backup (the shore then knows
    /// higher ones, answers with ``ExchangeResponse/clockFloor`` and applies nothing).
    public var clock: Int64
    /// The vessel has more changes to send after these: the shore sends none of its own this
    /// time. A vessel applies nothing newer while writes it made earlier are unsent, so that its
    /// cursor still says which partition it had seen when it wrote them (``PartitionGuard``).
    public var holdIncoming: Bool = false
    /// Long poll: when nothing waits for this vessel, the shore may hold the answer up to this
    /// many seconds (bounded by its own `long_poll_max_seconds`) and answer as soon as something
    /// arrives for the vessel. 0: answer at once. Only a request with no events is held.
    public var waitSeconds: Int = 0
    /// The longest hold a request may ask for.
    public static let maximumWaitSeconds = 3_600
    /// Summaries for the shore's view of the fleet (pending, dead letters, quarantine, ...).
    public var status: [String: JSONValue]
    /// What the vessel asks of the shore's answer: where to read from (ahead of `cursor`, when
    /// the vessel has the batch up to there and applies it meanwhile) and how large a batch.
    /// It travels in the status object, which shores before it ignore (docs/PROTOCOL.md,
    /// *Read-ahead and batch size*).
    public var readAhead: ReadAheadAsk?

    public init(vesselID: String, exchangeID: UUID = UUID(), cursor: Int64, events: [ChangeEvent], upTo: Int64, clock: Int64 = 0, holdIncoming: Bool = false, status: [String: JSONValue] = [:]) {
        self.holdIncoming = holdIncoming
        self.vesselID = vesselID
        self.exchangeID = exchangeID
        self.cursor = cursor
        self.events = events
        self.upTo = upTo
        self.clock = clock
        self.status = status
    }
}

/// A vessel's ask for its next batch (``ExchangeRequest/readAhead``).
public struct ReadAheadAsk: Sendable, Equatable {
    /// Read the vessel's queue after this position (at least the request's cursor): the vessel
    /// holds everything up to it, not yet applied.
    public var after: Int64
    /// At most this many events and about this many bytes (the shore serves no more than its
    /// own `max_batch_events`/`max_batch_bytes`).
    public var events: Int
    public var bytes: Int
    /// The key under which the ask travels in the request's status object.
    public static let statusKey = "read_ahead"
    public init(after: Int64, events: Int, bytes: Int) {
        self.after = after
        self.events = events
        self.bytes = bytes
    }
}

/// A shore's answer to a ``ReadAheadAsk``: where it read from, and the largest batch it serves
/// and accepts. Present only in answers to requests that asked.
public struct ReadAheadTerms: Sendable, Equatable {
    public var after: Int64
    public var maximumEvents: Int
    public var maximumBytes: Int
    public init(after: Int64, maximumEvents: Int, maximumBytes: Int) {
        self.after = after
        self.maximumEvents = maximumEvents
        self.maximumBytes = maximumBytes
    }
}

/// What the shore answers: the acknowledgement and the vessel's pending shore events.
public struct ExchangeResponse: Sendable, Equatable {
    /// The shore's node id: the writer its own changes' clocks name, which the vessel needs to
    /// check the ownership of shore-owned fields.
    public var shore: String
    /// Vessel outbox positions up to this one are applied on the shore.
    public var acknowledged: Int64
    /// Shore events after the vessel's cursor, bounded by count and bytes.
    public var events: [ChangeEvent]
    /// The shore position the events reach; the vessel's next cursor once applied.
    public var cursor: Int64
    /// More events wait after `cursor`.
    public var more: Bool
    /// The highest clock counter the shore has received from this vessel's own writes. A vessel
    /// whose clock is below it was restored from a backup: it moves its clocks past it before
    /// its changes are applied (the shore applied none of this request's).
    public var clockFloor: Int64
    /// The largest single change (its encoded values, in bytes) the shore accepts. A vessel
    /// sends a change larger than its batch budget alone in an exchange, up to this size.
    public var maximumChangeBytes: Int64
    /// Present while the vessel is caught up from table state (docs/PROTOCOL.md, *Catch-up*):
    /// the progress of the catch-up, which the vessel keeps and echoes in its next request's
    /// status as `catch_up`, so that the shore knows which page it applied.
    public var catchUp: [String: JSONValue]?
    /// Present when the request asked (``ExchangeRequest/readAhead``): the events follow
    /// `readAhead.after`, not necessarily the request's cursor.
    public var readAhead: ReadAheadTerms?
    /// A catch-up page in bulk form (``CatchUpBulkPage``), only to a vessel that announced it;
    /// the page's rows then come here rather than as events.
    public var bulk: CatchUpBulkPage?

    public init(shore: String, acknowledged: Int64, events: [ChangeEvent], cursor: Int64, more: Bool, clockFloor: Int64 = 0, maximumChangeBytes: Int64 = 0,
                catchUp: [String: JSONValue]? = nil) {
        self.catchUp = catchUp
        self.shore = shore
        self.acknowledged = acknowledged
        self.events = events
        self.cursor = cursor
        self.more = more
        self.clockFloor = clockFloor
        self.maximumChangeBytes = maximumChangeBytes
    }
}

/// Bounds every decoder checks before allocating.
public struct WireLimits: Sendable, Equatable {
    public var maximumEvents = 100_000
    public var maximumBodyBytes = 64 * 1_048_576
    public var maximumFieldsPerEvent = 1_600
    public var maximumNameBytes = 1_024
    public var maximumStringBytes = 16 * 1_048_576
    public var maximumStrings = 1_000_000
    public init() {}
}
