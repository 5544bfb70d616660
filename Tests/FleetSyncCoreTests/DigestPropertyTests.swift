import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest

/// A side of the digest exchange held in memory: rows by table, id → row hash. Summaries fold
/// each row's precomputed 64-bit FNV-1a hash (of its id and row hash) in id order, so that a
/// range's summary changes with any row in it, its order or its count, as the database side's
/// aggregate does. Ids are kept as two big-endian halves: a hexadecimal prefix is a bit prefix,
/// so ranges are found by binary search on integers (this side is the test's model; keeping it
/// cheap keeps the property test fast in debug builds).
struct MemorySide: DigestSide {
    struct Entry {
        var hi: UInt64
        var lo: UInt64
        var row: RowHash
        var digest: UInt64
    }
    var tables: [String: [UUID: String]]
    let sorted: [String: [Entry]]

    static func halves(_ id: UUID) -> (UInt64, UInt64) {
        withUnsafeBytes(of: id.uuid) { raw in
            (UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)), UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }

    static func fnv(_ bytes: some Sequence<UInt8>, _ start: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
        var h = start
        for byte in bytes { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return h
    }

    init(_ tables: [String: [UUID: String]]) {
        self.tables = tables
        sorted = tables.mapValues { rows in
            rows.map { id, hash in
                let (hi, lo) = Self.halves(id)
                return Entry(hi: hi, lo: lo, row: RowHash(id: id, hash: hash), digest: Self.fnv(hash.utf8, hi ^ (lo &* 31)))
            }.sorted { $0.hi != $1.hi ? $0.hi < $1.hi : $0.lo < $1.lo }
        }
    }

    /// The rows whose id starts with the prefix: the prefix as the low and high ids it spans,
    /// a binary search to the first, then in order.
    func inRange(_ range: DigestRange) -> ArraySlice<Entry> {
        guard let rows = sorted[range.table] else { return [] }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for (index, digit) in range.prefix.utf8.enumerated() {
            let value = UInt64(digit <= 57 ? digit - 48 : digit - 87)
            if index < 16 { hi |= value << (60 - 4 * UInt64(index)) } else { lo |= value << (60 - 4 * UInt64(index - 16)) }
        }
        let bits = range.prefix.utf8.count * 4
        func inside(_ e: Entry) -> Bool {
            if bits == 0 { return true }
            if bits <= 64 { return bits == 64 ? e.hi == hi : (e.hi >> UInt64(64 - bits)) == (hi >> UInt64(64 - bits)) }
            return e.hi == hi && (bits == 128 ? e.lo == lo : (e.lo >> UInt64(128 - bits)) == (lo >> UInt64(128 - bits)))
        }
        var low = 0, high = rows.count
        while low < high {
            let mid = (low + high) / 2
            if rows[mid].hi < hi || (rows[mid].hi == hi && rows[mid].lo < lo) { low = mid + 1 } else { high = mid }
        }
        var end = low
        while end < rows.count && inside(rows[end]) { end += 1 }
        return rows[low..<end]
    }

    func summaries(_ ranges: [DigestRange]) async throws -> [RangeSummary] {
        try DigestRules.validate(ranges, tables: Set(tables.keys))
        return ranges.map { range in
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            let rows = inRange(range)
            for row in rows { h = (h ^ row.digest) &* 0x100_0000_01b3 }
            return RangeSummary(count: Int64(rows.count), digest: String(h, radix: 16))
        }
    }

    func rows(_ ranges: [DigestRange]) async throws -> [[RowHash]] {
        try DigestRules.validate(ranges, tables: Set(tables.keys))
        return ranges.map { inRange($0).map(\.row) }
    }
}

/// Counts what the remote side is asked, as the link would carry it.
final class CountingSide: DigestSide, @unchecked Sendable {
    let inner: MemorySide
    var ranges = 0
    var rowsSent = 0
    init(_ inner: MemorySide) { self.inner = inner }
    func summaries(_ ranges: [DigestRange]) async throws -> [RangeSummary] {
        self.ranges += ranges.count
        return try await inner.summaries(ranges)
    }
    func rows(_ ranges: [DigestRange]) async throws -> [[RowHash]] {
        self.ranges += ranges.count
        let rows = try await inner.rows(ranges)
        rowsSent += rows.reduce(0) { $0 + $1.count }
        return rows
    }
}

/// Issue 18: the digest exchange finds exactly the rows a plain full comparison finds.
final class DigestPropertyTests: XCTestCase {
    static func id(_ rng: inout SplitMix64, clusterPrefix: UInt64?) -> UUID {
        var hi = rng.next(), lo = rng.next()
        // Some ids share a long prefix, so that the tree must go deep.
        if let clusterPrefix { hi = clusterPrefix | (hi & 0xFF) }
        lo = lo | 1
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 { bytes[i] = UInt8((hi >> (56 - 8 * UInt64(i))) & 0xFF); bytes[8 + i] = UInt8((lo >> (56 - 8 * UInt64(i))) & 0xFF) }
        return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                           bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }

    func testDigestExchangeFindsExactlyTheRowsAFullComparisonFinds() async throws {
        var cases = 0, maximumTrips = 0
        for seed in UInt64(1)...1_200 {
            var rng = SplitMix64(seed: seed)
            let tableCount = 1 + Int(rng.next() % 3)
            let names = (0..<tableCount).map { "t\($0)" }
            var shore: [String: [UUID: String]] = [:]
            var vessel: [String: [UUID: String]] = [:]
            // Shapes: empty partitions, one row, all rows differing, and random ones.
            let shape = seed % 6
            let cluster: UInt64? = rng.next() % 3 == 0 ? rng.next() & 0xFFFF_FFFF_FFFF_FF00 : nil
            for name in names {
                let count: Int
                switch shape {
                case 0: count = 0
                case 1: count = 1
                default: count = Int(rng.next() % 250)
                }
                var rows: [UUID: String] = [:]
                for _ in 0..<count { rows[Self.id(&rng, clusterPrefix: cluster)] = String(rng.next() % 1_000_000, radix: 36) }
                shore[name] = rows
                var mine = rows
                switch shape {
                case 2:  // every row differs
                    for key in mine.keys { mine[key] = mine[key]! + "x" }
                case 3:  // the vessel holds nothing
                    mine = [:]
                default:
                    let changes = Int(rng.next() % 8)
                    for _ in 0..<changes {
                        // Keys in a fixed order: a dictionary's order changes from run to run.
                        let keys = mine.keys.sorted { $0.uuidString < $1.uuidString }
                        let pick = keys.isEmpty ? nil : keys[Int(rng.next() % UInt64(keys.count))]
                        switch rng.next() % 3 {
                        case 0: if let key = pick { mine[key] = "changed" }
                        case 1: if let key = pick { mine[key] = nil }
                        default: mine[Self.id(&rng, clusterPrefix: cluster)] = "extra"
                        }
                    }
                }
                vessel[name] = mine
            }
            var expected: [RowDifference] = []
            for name in names {
                expected += DigestWalk.compare(table: name, ours: vessel[name]!.map { RowHash(id: $0.key, hash: $0.value) },
                                               theirs: shore[name]!.map { RowHash(id: $0.key, hash: $0.value) })
            }
            let remote = CountingSide(MemorySide(shore))
            let walk = DigestWalk(tables: names, maximumRanges: seed % 2 == 0 ? DigestRules.maximumRanges : 7, leafRows: seed % 3 == 0 ? 1 : DigestRules.leafRows)
            let result = try await walk.run(local: MemorySide(vessel), remote: remote)
            XCTAssertEqual(Set(result.differences), Set(expected), "seed \(seed)")
            XCTAssertEqual(result.differences.count, expected.count, "seed \(seed): each differing row once")
            if expected.isEmpty { XCTAssertEqual(result.roundTrips, 1, "seed \(seed): equal sides take one round trip") }
            maximumTrips = max(maximumTrips, result.roundTrips)
            cases += 1
        }
        XCTAssertGreaterThanOrEqual(cases, 1_000)
        print("digest exchange: \(cases) cases, at most \(maximumTrips) round trips")
    }

    /// What crosses the link grows with the differing rows, not with the rows: 50,000 rows with
    /// 7 differing ones.
    func testRangesAskedGrowWithDifferencesNotRows() async throws {
        var rng = SplitMix64(seed: 7)
        var shore: [UUID: String] = [:]
        for _ in 0..<50_000 { shore[Self.id(&rng, clusterPrefix: nil)] = String(rng.next() % 1_000, radix: 36) }
        var vessel = shore
        for key in shore.keys.sorted(by: { $0.uuidString < $1.uuidString }).prefix(7) { vessel[key] = "changed" }
        let remote = CountingSide(MemorySide(["t": shore]))
        let result = try await DigestWalk(tables: ["t"]).run(local: MemorySide(["t": vessel]), remote: remote)
        XCTAssertEqual(result.differences.count, 7)
        XCTAssertLessThan(remote.ranges, 7 * 16 * 5 + 16, "ranges asked: \(remote.ranges)")
        XCTAssertLessThanOrEqual(remote.rowsSent, 7 * Int(DigestRules.leafRows))
        let equal = CountingSide(MemorySide(["t": shore]))
        let same = try await DigestWalk(tables: ["t"]).run(local: MemorySide(["t": shore]), remote: equal)
        XCTAssertEqual(same.differences, [])
        XCTAssertEqual(equal.ranges, 1)
    }

    func testRangesThatDoNotFitTheProtocolAreRefused() {
        let tables: Set<String> = ["a", "b"]
        XCTAssertNoThrow(try DigestRules.validate([DigestRange(table: "a", prefix: "0"), DigestRange(table: "a", prefix: "1f"), DigestRange(table: "b", prefix: "")], tables: tables))
        func refused(_ ranges: [DigestRange], _ words: String) {
            XCTAssertThrowsError(try DigestRules.validate(ranges, tables: tables)) { error in
                XCTAssertTrue("\(error)".contains(words), "\(error)")
            }
        }
        refused([DigestRange(table: "a", prefix: "1"), DigestRange(table: "a", prefix: "0")], "out of order")
        refused([DigestRange(table: "a", prefix: "1"), DigestRange(table: "a", prefix: "1")], "out of order")
        refused([DigestRange(table: "a", prefix: "1"), DigestRange(table: "a", prefix: "1a")], "overlap")
        refused([DigestRange(table: "a", prefix: ""), DigestRange(table: "a", prefix: "7")], "overlap")
        refused([DigestRange(table: "c", prefix: "")], "not synced")
        refused([DigestRange(table: "a", prefix: "G")], "hexadecimal")
        refused([DigestRange(table: "a", prefix: String(repeating: "0", count: 33))], "hexadecimal")
        refused((0..<(DigestRules.maximumRanges + 1)).map { DigestRange(table: "a", prefix: String(format: "%04x", $0)) }, "at most")
    }
}
