import Foundation

/// A range of one table's row ids for verify: the ids whose 32 hexadecimal digits start with
/// `prefix` (the root, "", holds the whole table). A range's children split it 16 ways by the
/// next digit, so the ranges of a verify form a tree of depth at most 32.
public struct DigestRange: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var table: String
    public var prefix: String

    public init(table: String, prefix: String) {
        self.table = table
        self.prefix = prefix
    }

    public static func < (a: DigestRange, b: DigestRange) -> Bool {
        a.table != b.table ? a.table < b.table : a.prefix < b.prefix
    }

    public var description: String { "\(table)[\(prefix.isEmpty ? "*" : prefix + "…")]" }

    /// The 16 ranges one digit deeper.
    public var children: [DigestRange] {
        "0123456789abcdef".map { DigestRange(table: table, prefix: prefix + String($0)) }
    }

    /// The lowest and highest id of the range, as UUID text.
    public var lowestID: String { Self.uuidText(prefix.padding(toLength: 32, withPad: "0", startingAt: 0)) }
    public var highestID: String { Self.uuidText(prefix.padding(toLength: 32, withPad: "f", startingAt: 0)) }

    static func uuidText(_ hex: String) -> String {
        let h = Array(hex)
        return String(h[0..<8]) + "-" + String(h[8..<12]) + "-" + String(h[12..<16]) + "-" + String(h[16..<20]) + "-" + String(h[20..<32])
    }

    /// Whether the row id (any case, with or without dashes) falls in the range.
    public func contains(_ id: UUID) -> Bool { Self.hex(id).hasPrefix(prefix) }

    /// The 32 lower-case hexadecimal digits of an id.
    public static func hex(_ id: UUID) -> String { id.uuidString.lowercased().replacingOccurrences(of: "-", with: "") }
}

/// What one side holds in a range: how many rows, and a digest of their row hashes in id order.
public struct RangeSummary: Sendable, Hashable {
    public var count: Int64
    public var digest: String
    public init(count: Int64, digest: String) {
        self.count = count
        self.digest = digest
    }
}

/// One row's hash (over the columns both sides have, and its tombstone).
public struct RowHash: Sendable, Hashable {
    public var id: UUID
    public var hash: String
    public init(id: UUID, hash: String) {
        self.id = id
        self.hash = hash
    }
}

/// A row that differs between the vessel and the shore.
public struct RowDifference: Sendable, Hashable, Comparable, CustomStringConvertible {
    public enum Kind: String, Sendable { case missingHere = "missing_on_vessel", missingOnShore = "missing_on_shore", valuesDiffer = "values_differ" }
    public var table: String
    public var id: UUID
    public var kind: Kind
    public init(table: String, id: UUID, kind: Kind) {
        self.table = table
        self.id = id
        self.kind = kind
    }
    public static func < (a: RowDifference, b: RowDifference) -> Bool {
        a.table != b.table ? a.table < b.table : a.id.orderKey < b.id.orderKey
    }
    public var description: String { "\(table) \(id.uuidString.lowercased()): \(kind.rawValue)" }
}

/// A request that does not fit the digest protocol.
public struct DigestProtocolError: Error, Sendable, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The rules of the digest exchange, checked by the side that answers.
public enum DigestRules {
    /// Ranges in one request.
    public static let maximumRanges = 4_096
    /// Rows a range may hold on either side before its rows are compared one by one instead of
    /// descending further.
    public static let leafRows: Int64 = 16
    /// Ids in one fetch of rows for repair.
    public static let maximumFetch = 1_000

    /// Checks a request's ranges: at most ``maximumRanges``, synced tables only, prefixes of at
    /// most 32 lower-case hexadecimal digits, in order, none inside another.
    public static func validate(_ ranges: [DigestRange], tables: Set<String>) throws(DigestProtocolError) {
        guard ranges.count <= maximumRanges else {
            throw DigestProtocolError("\(ranges.count) ranges in one request; at most \(maximumRanges) are accepted")
        }
        var previous: DigestRange?
        for range in ranges {
            guard tables.contains(range.table) else {
                throw DigestProtocolError("table \"\(range.table.prefix(64))\" is not synced here; ranges may only name synced tables")
            }
            guard range.prefix.utf8.count <= 32, range.prefix.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else {
                throw DigestProtocolError("range prefix \"\(range.prefix.prefix(40))\" is not up to 32 lower-case hexadecimal digits")
            }
            if let previous {
                guard previous < range else {
                    throw DigestProtocolError("ranges out of order: \(range) after \(previous); send them sorted by table and prefix")
                }
                guard previous.table != range.table || !range.prefix.hasPrefix(previous.prefix) else {
                    throw DigestProtocolError("ranges overlap: \(range) lies inside \(previous)")
                }
            }
            previous = range
        }
    }
}

/// One side of a digest exchange: the vessel's own database, or the shore over the link.
public protocol DigestSide: Sendable {
    /// The summaries of `ranges` (sorted, disjoint), in the same order.
    func summaries(_ ranges: [DigestRange]) async throws -> [RangeSummary]
    /// The row hashes of each range, in id order.
    func rows(_ ranges: [DigestRange]) async throws -> [[RowHash]]
}

/// The walk down the digest tree (pure: the sides do the I/O). Starting from each table's root,
/// ranges whose summaries agree are done; a range that differs and holds at most
/// ``DigestRules/leafRows`` rows on both sides has its rows compared one by one; any other
/// differing range is split into its 16 children. Requests to the remote side are batched up to
/// ``DigestRules/maximumRanges`` ranges, so round trips grow with the tree's depth and bytes with
/// the differing rows times the depth, not with the number of rows.
public struct DigestWalk: Sendable {
    public var tables: [String]
    public var maximumRanges: Int
    public var leafRows: Int64
    /// Per table, how many digits deep the walk starts (0, the root, when not given): a large
    /// table starts with its 16 or 256 first ranges in the first request (``startDepth(rows:)``).
    public var startDepths: [String: Int]

    public init(tables: [String], maximumRanges: Int = DigestRules.maximumRanges, leafRows: Int64 = DigestRules.leafRows, startDepths: [String: Int] = [:]) {
        self.tables = tables
        self.maximumRanges = maximumRanges
        self.leafRows = leafRows
        self.startDepths = startDepths
    }

    /// The depth a walk over a table of about `rows` rows starts at: the root up to 16,384
    /// rows, its 16 children up to 262,144, else its 256 grandchildren. Each range that differs
    /// is summarized again in its 16 children by both sides, so starting at the root costs a
    /// large table's rows about twice when anything differs (the root and its children hold the
    /// same rows); starting deeper, a difference rehashes only the ranges that hold it. The
    /// first request then holds up to 256 ranges per table (a few kilobytes), whatever the size.
    public static func startDepth(rows: Int64) -> Int {
        rows <= 16_384 ? 0 : rows <= 262_144 ? 1 : 2
    }

    /// The ranges of `table` at `depth` digits, in order.
    static func ranges(of table: String, depth: Int) -> [DigestRange] {
        var ranges = [DigestRange(table: table, prefix: "")]
        for _ in 0..<min(max(depth, 0), 3) { ranges = ranges.flatMap(\.children) }
        return ranges
    }

    public struct Result: Sendable {
        public var differences: [RowDifference]
        /// Requests sent to the remote side.
        public var roundTrips: Int
        /// Ranges whose summaries were compared, and ranges whose rows were.
        public var rangesCompared: Int
        public var leavesCompared: Int
    }

    public func run(local: some DigestSide, remote: some DigestSide) async throws -> Result {
        var pending = tables.sorted().flatMap { Self.ranges(of: $0, depth: startDepths[$0] ?? 0) }
        var differences: [RowDifference] = []
        var trips = 0, compared = 0, leavesCompared = 0
        while !pending.isEmpty {
            let batch = Array(pending.prefix(maximumRanges)).sorted()
            pending.removeFirst(batch.count)
            let theirs = try await remote.summaries(batch)
            trips += 1
            let ours = try await local.summaries(batch)
            guard theirs.count == batch.count, ours.count == batch.count else {
                throw DigestProtocolError("a side answered \(theirs.count) and \(ours.count) summaries for \(batch.count) ranges")
            }
            compared += batch.count
            var leaves: [DigestRange] = []
            for (index, range) in batch.enumerated() where theirs[index] != ours[index] {
                if max(theirs[index].count, ours[index].count) <= leafRows || range.prefix.count >= 32 {
                    leaves.append(range)
                } else {
                    pending += range.children
                }
            }
            var start = 0
            while start < leaves.count {
                let chunk = Array(leaves[start..<min(start + maximumRanges, leaves.count)])
                start += chunk.count
                let theirRows = try await remote.rows(chunk)
                trips += 1
                let ourRows = try await local.rows(chunk)
                guard theirRows.count == chunk.count, ourRows.count == chunk.count else {
                    throw DigestProtocolError("a side answered rows for \(theirRows.count) and \(ourRows.count) of \(chunk.count) ranges")
                }
                leavesCompared += chunk.count
                for (index, range) in chunk.enumerated() {
                    differences += Self.compare(table: range.table, ours: ourRows[index], theirs: theirRows[index])
                }
            }
        }
        return Result(differences: differences.sorted(), roundTrips: trips, rangesCompared: compared, leavesCompared: leavesCompared)
    }

    /// The rows that differ between two lists of one range.
    public static func compare(table: String, ours: [RowHash], theirs: [RowHash]) -> [RowDifference] {
        var mine: [UUID: String] = [:]
        for row in ours { mine[row.id] = row.hash }
        var result: [RowDifference] = []
        var seen = Set<UUID>()
        for row in theirs {
            seen.insert(row.id)
            switch mine[row.id] {
            case nil: result.append(RowDifference(table: table, id: row.id, kind: .missingHere))
            case let hash? where hash != row.hash: result.append(RowDifference(table: table, id: row.id, kind: .valuesDiffer))
            default: break
            }
        }
        for row in ours where !seen.contains(row.id) { result.append(RowDifference(table: table, id: row.id, kind: .missingOnShore)) }
        return result
    }
}

extension UUID {
    /// The id's 128 bits as two big-endian halves: they order ids as their hexadecimal text does
    /// (``DigestRange/hex(_:)``), without building that text at every comparison.
    fileprivate var orderKey: (UInt64, UInt64) {
        withUnsafeBytes(of: uuid) { raw in
            (UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)), UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }
}
