/// The vessel daemon's schedule as a value-type state machine: it decides when to exchange and
/// how long to back off; the daemon performs the actions. No I/O, so every transition is tested.
public struct ExchangeLoop: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case idle
        case exchanging
        case backingOff(failures: Int)
        case stopped
    }

    public enum Action: Sendable, Equatable {
        case exchange
        case sleep(seconds: Double)
        case stop
    }

    public private(set) var state: State = .idle
    public var intervalSeconds: Double
    public var initialBackoffSeconds: Double = 1
    public var maximumBackoffSeconds: Double = 300

    public init(intervalSeconds: Double) { self.intervalSeconds = intervalSeconds }

    /// The daemon starts: exchange at once.
    public mutating func start() -> Action {
        state = .exchanging
        return .exchange
    }

    /// An exchange succeeded; `pending` says whether more is waiting on either side.
    public mutating func succeeded(pending: Bool) -> Action {
        guard state != .stopped else { return .stop }
        if pending {
            state = .exchanging
            return .exchange
        }
        state = .idle
        return .sleep(seconds: intervalSeconds)
    }

    /// An exchange failed (shore unreachable, refused, ...): back off exponentially with jitter.
    /// `jitter` is a number in 0..<1 from the caller's random source.
    public mutating func failed(jitter: Double) -> Action {
        guard state != .stopped else { return .stop }
        let failures: Int
        if case .backingOff(let n) = state { failures = n + 1 } else { failures = 1 }
        state = .backingOff(failures: failures)
        let base = min(initialBackoffSeconds * Double(1 << min(failures - 1, 20)), maximumBackoffSeconds)
        return .sleep(seconds: base * (0.5 + jitter))
    }

    /// A sleep ended (or local changes woke the daemon).
    public mutating func woke() -> Action {
        guard state != .stopped else { return .stop }
        if case .backingOff = state { return .exchange }
        state = .exchanging
        return .exchange
    }

    /// SIGTERM: stop between exchanges.
    public mutating func stop() -> Action {
        state = .stopped
        return .stop
    }
}
