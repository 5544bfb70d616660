import Foundation

/// When the vessel daemon verifies its partition by itself (``Verifier``): after every catch-up
/// from table state, after it detects a restored database (the shore knew clocks of this vessel
/// above its own), and every `intervalSeconds` counted from the last verify (0: no schedule).
/// The last verify's time is the one stored in `sync_state.last_verify`, so a restarted daemon
/// keeps the schedule; a vessel never verified is verified an hour after the daemon starts (or
/// one interval, if shorter), so that a daemon restarted often still verifies. A verify that
/// failed is retried after `retrySeconds` (or the interval, if shorter), and a verify owed for a
/// catch-up or a restore stays owed until one succeeds.
public struct VerifySchedule: Sendable, Equatable {
    public enum Reason: String, Sendable {
        case catchUp = "after_catch_up"
        case restore = "after_restore"
        case schedule = "scheduled"
    }

    public var intervalSeconds: Int
    public var retrySeconds: Double = 300
    /// When the last verify ran (succeeded or not); nil: never.
    public private(set) var last: Date?
    public private(set) var lastFailed = false
    /// A verify owed whatever the interval says.
    public private(set) var owed: Reason?

    /// The first scheduled verify of a vessel never verified.
    public static let firstAfterSeconds = 3_600

    public init(intervalSeconds: Int, last: Date?, started: Date = Date()) {
        self.intervalSeconds = intervalSeconds
        // Never verified: as if the last verify had run so that the next is due an hour from now.
        self.last = last ?? started.addingTimeInterval(Double(min(intervalSeconds, Self.firstAfterSeconds) - intervalSeconds))
    }

    /// An exchange succeeded: a finished catch-up or a detected restore makes a verify owed.
    public mutating func exchanged(caughtUp: Bool, restored: Bool) {
        if restored { owed = .restore } else if caughtUp && owed == nil { owed = .catchUp }
    }

    /// Why a verify is due at `now`, or nil.
    public func due(at now: Date) -> Reason? {
        guard let last else { return owed }
        let elapsed = now.timeIntervalSince(last)
        if lastFailed && elapsed < retryWait { return nil }
        if let owed { return owed }
        return intervalSeconds > 0 && elapsed >= Double(intervalSeconds) ? .schedule : nil
    }

    /// Seconds from `now` until the next scheduled verify (nil: none is scheduled).
    public func secondsUntilDue(at now: Date) -> Double? {
        if due(at: now) != nil { return 0 }
        guard let last else { return nil }
        let wait = lastFailed ? retryWait : Double(intervalSeconds)
        guard owed != nil || intervalSeconds > 0 else { return nil }
        return max(0, wait - now.timeIntervalSince(last))
    }

    /// The pause after a failed verify: `retrySeconds`, or the interval if shorter.
    var retryWait: Double { intervalSeconds > 0 ? min(retrySeconds, Double(intervalSeconds)) : retrySeconds }

    /// A verify ran at `now`.
    public mutating func ran(at now: Date, succeeded: Bool) {
        last = now
        lastFailed = !succeeded
        if succeeded { owed = nil }
    }
}
