import Foundation

/// The fleet's first contacts, before the measured window: every vessel authenticates
/// (challenge, ML-DSA proof, token) and is caught up from table state (bulk pages of the
/// broadcast `vessel` table and its crew), starting at a random moment of `spread` seconds.
/// A real fleet joins one vessel at a time, over weeks; the measured window is then the fleet
/// exchanging at once, each exchange a few changes each way. The join's own figures are
/// reported beside it (`--start cold` puts the first contacts inside the window instead).
struct JoinResult {
    /// Seconds until the last vessel was caught up.
    var seconds: Double
    var requests: Int
    var p50: Double, p99: Double, maximum: Double
    var failures: [String: Int]
    /// Vessels still not caught up after `limit`.
    var unjoined: Int

    static func run(_ vessels: [SimulatedVessel], spread: Double, limit: Duration = .seconds(300)) async -> JoinResult {
        let recorder = Recorder(steadyFrom: ContinuousClock.now + limit)
        let start = ContinuousClock.now
        let deadline = start + limit
        let joined = await withTaskGroup(of: Bool.self) { group in
            for vessel in vessels {
                group.addTask {
                    if spread > 0 { try? await Task.sleep(for: .seconds(Double.random(in: 0..<spread))) }
                    while ContinuousClock.now < deadline {
                        let outcome = await vessel.exchange(writing: false)
                        await recorder.record(outcome)
                        switch outcome {
                        case .ok(_, _, _, let more) where !more: return true
                        case .failed: try? await Task.sleep(for: .seconds(Double.random(in: 1...2)))
                        default: continue
                        }
                    }
                    return false
                }
            }
            var count = 0
            for await ok in group where ok { count += 1 }
            return count
        }
        let elapsed = ContinuousClock.now - start
        let sorted = await recorder.latencies.sorted()
        func quantile(_ q: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] }
        let failures = await recorder.failures
        return JoinResult(seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
                          requests: sorted.count + failures.values.reduce(0, +),
                          p50: quantile(0.5), p99: quantile(0.99), maximum: sorted.last ?? 0,
                          failures: failures, unjoined: vessels.count - joined)
    }
}
