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
    /// The highest vessel outbox position the events cover; the shore acknowledges up to it.
    public var upTo: Int64
    /// Summaries for the shore's view of the fleet (pending, dead letters, quarantine, ...).
    public var status: [String: JSONValue]

    public init(vesselID: String, exchangeID: UUID = UUID(), cursor: Int64, events: [ChangeEvent], upTo: Int64, status: [String: JSONValue] = [:]) {
        self.vesselID = vesselID
        self.exchangeID = exchangeID
        self.cursor = cursor
        self.events = events
        self.upTo = upTo
        self.status = status
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

    public init(shore: String, acknowledged: Int64, events: [ChangeEvent], cursor: Int64, more: Bool) {
        self.shore = shore
        self.acknowledged = acknowledged
        self.events = events
        self.cursor = cursor
        self.more = more
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
