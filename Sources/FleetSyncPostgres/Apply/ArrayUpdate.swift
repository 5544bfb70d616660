import FleetSyncCore
import Foundation
import PostgresNIO

/// The UPDATE of rows that exist here, with the changed values bound as arrays (one array per
/// column, each value in its type's input text, as COPY carries it) and only the changed fields'
/// clocks, which the database merges into the stored ones (`sync_clock || clocks`).
///
/// It replaces `json_populate_recordset` over whole records that carried every clock of the row:
/// parsing those records cost about 12 µs a row of the 25 µs the statement took for a 12-column
/// table (EXPLAIN ANALYZE in docs/BENCHMARKS.md, "Receiver per-event cost: typed arrays"), and
/// building and reading every clock cost the receiver as much again.
///
/// Values are cast from text to the column's type without its modifier (`varchar(20)` is cast to
/// `character varying`), and the assignment applies the modifier: a value too long for the
/// column fails as it does through COPY or JSON, where an explicit cast would truncate it. Only
/// built-in types are cast (a domain over `varchar(5)` would truncate too); a slice that writes a
/// column of another type (an enum, a domain, a composite) or a value COPY cannot carry goes
/// through JSON records instead (``castType(_:)`` is nil, ``append`` returns false).
struct ArrayUpdate {
    let columns: [PhysicalColumn]
    private let casts: [String]
    private var ids: [UUID] = []
    private var versions: [Int64] = []
    private var deleted: [Bool] = []
    /// `jsonb[]` literal of each row's changed clocks, and a `text[]` literal per column.
    private var clocks = ""
    /// `xid[]` literal of the row versions read, when the update checks them.
    private var xmins: String?
    private var values: [String]

    /// Nil when a column's type is not one that ``castType(_:)`` casts.
    init?(columns: [PhysicalColumn]) {
        var casts: [String] = []
        for column in columns {
            guard let cast = Self.castType(column.type) else { return nil }
            casts.append(cast)
        }
        self.columns = columns
        self.casts = casts
        self.values = Array(repeating: "", count: columns.count)
    }

    var isEmpty: Bool { ids.isEmpty }

    /// Adds a row: its merged state (every column of ``columns`` is in it, read or incoming), its
    /// version and tombstone, and the fields the update changes (their clocks are written).
    /// False when a value cannot travel as input text; then nothing is added.
    /// `xmin`: the row version read; the row is written only if it is still that version.
    mutating func append(id: UUID, state: RowState, version: Int64, deleted isDeleted: Bool, changed: [String], xmin: String? = nil) -> Bool {
        var texts: [String?] = []
        texts.reserveCapacity(columns.count)
        for column in columns {
            let value = state.fields[column.name]?.value ?? .null
            guard CopyEncoder.canEncode(value, column: column) else { return false }
            texts.append(CopyEncoder.inputText(value, column: column))
        }
        var changedClocks = "{"
        for name in changed {
            // A field never written through FleetSync has no clock (the lowest): none is stored.
            guard let clock = state.fields[name]?.clock, !clock.node.isEmpty else { continue }
            if changedClocks.utf8.count > 1 { changedClocks += "," }
            JSONValue.string(name).write(to: &changedClocks)
            changedClocks += ":"
            clock.json.write(to: &changedClocks)
        }
        changedClocks += "}"
        ids.append(id)
        versions.append(version)
        deleted.append(isDeleted)
        Self.element(changedClocks, separator: ids.count > 1, into: &clocks)
        if let xmin {
            if ids.count > 1 { xmins! += "," } else { xmins = "" }
            xmins! += xmin
        }
        for index in texts.indices {
            Self.element(texts[index], separator: ids.count > 1, into: &values[index])
        }
        return true
    }

    private static func element(_ text: String?, separator: Bool, into literal: inout String) {
        if separator { literal += "," }
        if let text { CopyEncoder.quoted(text, into: &literal) } else { literal += "NULL" }
    }

    /// The statement and its bindings for the rows added.
    func statement(table qualified: String) -> (sql: String, binds: PostgresBindings) {
        var binds = PostgresBindings()
        binds.append(ids)
        binds.append(versions)
        binds.append(deleted)
        binds.append("{" + clocks + "}")
        for literal in values { binds.append("{" + literal + "}") }
        if let xmins { binds.append("{" + xmins + "}") }
        let sets = zip(columns, casts).enumerated().map { index, pair in
            "\(SQL.identifier(pair.0.name)) = CAST(r.c\(index) AS \(pair.1))"
        } + ["sync_version = r.v", "is_deleted = r.d", "sync_clock = COALESCE(t.sync_clock, '{}'::jsonb) || r.k"]
        var arrays = ["$1::uuid[]", "$2::bigint[]", "$3::boolean[]", "$4::jsonb[]"] + columns.indices.map { "$\($0 + 5)::text[]" }
        var names = ["id", "v", "d", "k"] + columns.indices.map { "c\($0)" }
        if xmins != nil {
            arrays.append("$\(arrays.count + 1)::xid[]")
            names.append("x")
        }
        let sql = """
            UPDATE \(qualified) t SET \(sets.joined(separator: ", "))
            FROM unnest(\(arrays.joined(separator: ", "))) AS r(\(names.joined(separator: ", "))) WHERE t.id = r.id\(xmins != nil ? " AND t.xmin = r.x" : "")
            """
        return (sql, binds)
    }

    /// Built-in types (as `format_type` prints them, without modifier) whose text cast is their
    /// input function.
    static let castable: Set<String> = [
        "smallint", "integer", "bigint", "numeric", "real", "double precision", "money",
        "text", "character varying", "bpchar", "\"char\"", "name",
        "boolean", "bytea", "uuid", "json", "jsonb", "xml",
        "date", "time without time zone", "time with time zone", "timestamp without time zone", "timestamp with time zone", "interval",
        "inet", "cidr", "macaddr", "macaddr8", "bit varying",
        "point", "line", "lseg", "box", "path", "polygon", "circle",
        "tsvector", "tsquery", "oid", "pg_lsn",
        "int4range", "int8range", "numrange", "daterange", "tsrange", "tstzrange",
    ]

    /// The type to cast a column's input text to: the column's type without its modifier, so that
    /// the assignment applies it (`character(3)` → `bpchar`, `bit(3)` → `bit varying`:
    /// `character` and `bit` alone mean length 1); nil for a type that is not built in.
    static func castType(_ type: String) -> String? {
        var base = Substring(type)
        let isArray = base.hasSuffix("[]")
        if isArray { base = base.dropLast(2) }
        guard !base.contains("[") else { return nil }
        var name = ""
        var depth = 0
        for character in base {
            if character == "(" { depth += 1 } else if character == ")" { depth -= 1 } else if depth == 0 { name.append(character) }
        }
        name = name.split(separator: " ").joined(separator: " ")
        if name.hasPrefix("interval") { name = "interval" }
        if name == "character" { name = "bpchar" }
        if name == "bit" { name = "bit varying" }
        guard castable.contains(name) else { return nil }
        return isArray ? name + "[]" : name
    }
}
