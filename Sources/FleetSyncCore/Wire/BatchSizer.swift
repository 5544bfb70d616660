/// How large a vessel's next batch is, in events and bytes, adapted to what the link and the
/// receiver take (issue 19): doubled after a full batch that took less than half the target
/// time, halved after one that took more than twice the target or failed; never below the floor
/// (a 20 KB budget on a poor link) nor above the ceiling (`[limits] max_batch_events` and
/// `max_batch_bytes`, and the shore's own). Not adaptive: always the starting size. Pure: the
/// caller measures and reports.
public struct BatchSizer: Sendable, Equatable {
    public private(set) var events: Int
    public private(set) var bytes: Int
    public let floorEvents: Int
    public let floorBytes: Int
    public private(set) var ceilingEvents: Int
    public private(set) var ceilingBytes: Int
    public let adaptive: Bool
    /// The time one exchange (its transfer and its apply) should take: long enough that its
    /// fixed costs are small, short enough that a lost answer costs little and lag stays low.
    public let targetSeconds: Double
    /// The smallest byte budget a batch shrinks to (a poor link's budget; BRIEF part 7).
    public static let poorLinkBytes = 20_480

    public init(events: Int, bytes: Int, maximumEvents: Int, maximumBytes: Int, adaptive: Bool, targetSeconds: Double = 2) {
        self.events = max(1, events)
        self.bytes = max(1, bytes)
        self.adaptive = adaptive
        self.targetSeconds = targetSeconds
        floorEvents = max(1, min(events, 16))
        floorBytes = max(1, min(bytes, Self.poorLinkBytes))
        ceilingEvents = max(self.events, maximumEvents)
        ceilingBytes = max(self.bytes, maximumBytes)
    }

    /// One exchange's batch took `seconds`; `full` says it was cut by the size (more waited).
    public mutating func observe(seconds: Double, full: Bool) {
        guard adaptive else { return }
        if seconds > targetSeconds * 2 {
            shrink()
        } else if full, seconds < targetSeconds / 2 {
            events = min(ceilingEvents, events * 2)
            bytes = min(ceilingBytes, bytes * 2)
        }
    }

    /// An exchange failed (a timeout, a dropped connection): smaller batches get through a poor
    /// link where large ones keep failing.
    public mutating func failed() {
        guard adaptive else { return }
        shrink()
    }

    /// The peer's ceilings (a shore's `max_batch_events`/`max_batch_bytes`), learnt from its
    /// answer: the batch never grows past them.
    public mutating func limit(events maximumEvents: Int, bytes maximumBytes: Int) {
        guard adaptive else { return }
        ceilingEvents = max(floorEvents, min(ceilingEvents, maximumEvents))
        ceilingBytes = max(floorBytes, min(ceilingBytes, maximumBytes))
        events = min(events, ceilingEvents)
        bytes = min(bytes, ceilingBytes)
    }

    private mutating func shrink() {
        events = max(floorEvents, events / 2)
        bytes = max(floorBytes, bytes / 2)
    }
}
