import FleetSyncCore
import Foundation
import PostgresNIO

/// How a catch-up page reads a row: one result column per synced column rather than the row's
/// values as one JSON object. Building that object (`jsonb_build_object` and its text) was the
/// largest cost of the shore's page query, and parsing it again the largest of the shore's own
/// work. A `text` or `character varying` column comes as its text, which is its captured value
/// (a JSON string) as it is; any other column as the text of its captured JSON value
/// (``ColumnCodec/captureExpression(_:row:)``), parsed alone. SQL NULL is JSON null, as in the
/// captured object. The tombstone travels when the row's clocks hold one, as before.
struct CatchUpRowColumns {
    let columns: [PhysicalColumn]
    /// Per column: its text is its value (no JSON to parse).
    let plain: [Bool]

    init(_ columns: [PhysicalColumn]) {
        self.columns = columns
        plain = columns.map { column in
            let type = column.type.lowercased()
            return type == "text" || type == "character varying" || (type.hasPrefix("character varying(") && !type.hasSuffix("[]"))
        }
    }

    /// The values of row `r`, as columns `c0`, `c1`, ... (their aliases), then `deleted` and `clocks`.
    var selectList: String {
        let values = columns.indices.map { i in
            plain[i] ? "r.\(SQL.identifier(columns[i].name))::text AS c\(i)"
                : "to_jsonb(\(ColumnCodec.captureExpression(columns[i], row: "r")))::text AS c\(i)"
        }
        return (["r.id"] + values + ["r.is_deleted AS deleted", "r.sync_clock::text AS clocks"]).joined(separator: ", ")
    }

    /// The columns the page returns, in order: the id, the values, the tombstone, the clocks.
    var outputList: String {
        (["id"] + columns.indices.map { "c\($0)" } + ["deleted", "clocks"]).joined(separator: ", ")
    }

    /// About the bytes of the row as one JSON object with its clocks, over the subquery `t`
    /// (the page's byte budget counts it).
    var sizeExpression: String {
        let names = columns.reduce(0) { $0 + $1.name.utf8.count + 6 }
        let values = columns.indices.map { "coalesce(octet_length(t.c\($0)), 4)" }
        return "(" + (values + ["coalesce(octet_length(t.clocks), 0)", String(names + 48)]).joined(separator: " + ") + ")::bigint"
    }

    /// The row's fields with their clocks (a field whose clock is missing gets the lowest clock
    /// of the reader's fallback node), from a row laid out as ``outputList``.
    func fields(of row: PostgresRow, clocks reader: inout ClockReader, context: String) throws -> [String: FieldChange] {
        let count = columns.count
        let clockMembers = try (try row.value(count + 2, as: String?.self, context: context)).map { try CatchUpReader.members(of: $0, what: "clocks") } ?? [:]
        var fields: [String: FieldChange] = [:]
        fields.reserveCapacity(count + 1)
        for i in 0..<count {
            let name = columns[i].name
            let value: JSONValue
            if let text = try row.value(i + 1, as: String?.self, context: context) {
                value = plain[i] ? .string(text) : try JSONParser.parse(text, valuesAt: JSONLimits.Envelope.value)
            } else {
                value = .null
            }
            fields[name] = FieldChange(value: value, clock: reader.clock(clockMembers[name]))
        }
        if let tombstone = clockMembers[ChangeEvent.deletedField] {
            let deleted = try row.value(count + 1, as: Bool.self, context: context)
            fields[ChangeEvent.deletedField] = FieldChange(value: .bool(deleted), clock: reader.clock(tombstone))
        }
        return fields
    }
}
