import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest

/// Counts the rows the remote side summarizes: its hashing work.
final class RowCountingSide: DigestSide, @unchecked Sendable {
    let inner: MemorySide
    var summarizedRows = 0
    var ranges = 0
    init(_ inner: MemorySide) { self.inner = inner }
    func summaries(_ ranges: [DigestRange]) async throws -> [RangeSummary] {
        self.ranges += ranges.count
        let result = try await inner.summaries(ranges)
        summarizedRows += result.reduce(0) { $0 + Int($1.count) }
        return result
    }
    func rows(_ ranges: [DigestRange]) async throws -> [[RowHash]] { try await inner.rows(ranges) }
}

/// Issue 18, verify with differences: a large table's walk starts below its root, so that a
/// difference does not make both sides hash the whole table again (the root and its 16
/// children hold the same rows).
final class DigestStartDepthTests: XCTestCase {
    func testStartingDeeperFindsTheSameRowsAndHashesFewer() async throws {
        var rng = SplitMix64(seed: 18)
        var shore: [UUID: String] = [:]
        for _ in 0..<50_000 { shore[DigestPropertyTests.id(&rng, clusterPrefix: nil)] = String(rng.next() % 1_000, radix: 36) }
        var vessel = shore
        let keys = shore.keys.sorted { $0.uuidString < $1.uuidString }
        for i in 0..<7 { vessel[keys[i * 7_000]] = "changed" }
        var summarized: [Int: Int] = [:]
        for depth in 0...2 {
            let remote = RowCountingSide(MemorySide(["t": shore]))
            let result = try await DigestWalk(tables: ["t"], startDepths: ["t": depth]).run(local: MemorySide(["t": vessel]), remote: remote)
            XCTAssertEqual(result.differences.count, 7, "depth \(depth)")
            XCTAssertEqual(Set(result.differences.map(\.id)), Set((0..<7).map { keys[$0 * 7_000] }))
            summarized[depth] = remote.summarizedRows
            let equal = RowCountingSide(MemorySide(["t": shore]))
            let same = try await DigestWalk(tables: ["t"], startDepths: ["t": depth]).run(local: MemorySide(["t": shore]), remote: equal)
            XCTAssertEqual(same.differences, [])
            XCTAssertEqual(same.roundTrips, 1, "equal sides: one round trip at depth \(depth)")
            XCTAssertEqual(equal.summarizedRows, 50_000, "equal sides: every row once")
            XCTAssertEqual(equal.ranges, [1, 16, 256][depth])
        }
        print("rows summarized with 7 differing of 50,000: \(summarized.sorted { $0.key < $1.key })")
        XCTAssertGreaterThan(summarized[0]!, 100_000, "from the root: the table twice and more")
        XCTAssertLessThan(summarized[2]!, 60_000, "from depth 2: little more than once")
    }

    func testTheStartDepthFollowsTheTableSize() {
        XCTAssertEqual(DigestWalk.startDepth(rows: 0), 0)
        XCTAssertEqual(DigestWalk.startDepth(rows: 16_384), 0)
        XCTAssertEqual(DigestWalk.startDepth(rows: 20_000), 1)
        XCTAssertEqual(DigestWalk.startDepth(rows: 1_000_000), 2)
        XCTAssertEqual(DigestWalk.startDepth(rows: 1_000_000_000), 2, "at most 256 first ranges a table")
    }

    /// The property of the digest exchange holds from any start depth: seeded cases against a
    /// plain full comparison, including empty tables and all rows differing.
    func testAnyStartDepthFindsExactlyTheRowsAFullComparisonFinds() async throws {
        for seed in UInt64(1)...300 {
            var rng = SplitMix64(seed: seed &+ 50_000)
            let count = Int(rng.next() % 3) == 0 ? Int(rng.next() % 3) : Int(rng.next() % 3_000)
            var shore: [UUID: String] = [:]
            for _ in 0..<count { shore[DigestPropertyTests.id(&rng, clusterPrefix: rng.next() % 4 == 0 ? 0xABCD_0000_0000_0000 : nil)] = String(rng.next() % 50, radix: 36) }
            var vessel = shore
            let all = seed % 10 == 0
            for key in shore.keys where all || rng.next() % 100 < 3 { vessel[key] = rng.next() % 2 == 0 ? nil : "changed" }
            for _ in 0..<Int(rng.next() % 4) { vessel[DigestPropertyTests.id(&rng, clusterPrefix: nil)] = "extra" }
            let expected = DigestWalk.compare(table: "t", ours: vessel.map { RowHash(id: $0.key, hash: $0.value) }, theirs: shore.map { RowHash(id: $0.key, hash: $0.value) })
            let depth = Int(seed % 3)
            let result = try await DigestWalk(tables: ["t"], leafRows: seed % 3 == 1 ? 1 : DigestRules.leafRows, startDepths: ["t": depth])
                .run(local: MemorySide(["t": vessel]), remote: MemorySide(["t": shore]))
            XCTAssertEqual(Set(result.differences), Set(expected), "seed \(seed), depth \(depth)")
            XCTAssertEqual(result.differences.count, expected.count, "seed \(seed): each differing row once")
        }
    }
}
