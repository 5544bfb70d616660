/// A column as the local catalog describes it.
public struct PhysicalColumn: Sendable, Hashable {
    public var name: String
    /// The type as `format_type` prints it, e.g. `numeric(20,4)` or `text[]`.
    public var type: String
    public var notNull: Bool
    public var hasDefault: Bool
    /// `GENERATED ALWAYS AS (...) STORED`: every node computes it, so it is never synced.
    public var generated: Bool
    /// `GENERATED ALWAYS AS IDENTITY`: each database numbers it and refuses values from elsewhere.
    public var identityAlways: Bool

    public init(name: String, type: String, notNull: Bool = false, hasDefault: Bool = false, generated: Bool = false, identityAlways: Bool = false) {
        self.name = name
        self.type = type
        self.notNull = notNull
        self.hasDefault = hasDefault
        self.generated = generated
        self.identityAlways = identityAlways
    }
}

/// A foreign key from one table to another (or itself).
public struct ForeignKey: Sendable, Hashable {
    public var name: String
    public var columns: [String]
    public var referencedSchema: String
    public var referencedTable: String
    public var referencedColumns: [String]

    public init(name: String, columns: [String], referencedSchema: String, referencedTable: String, referencedColumns: [String]) {
        self.name = name
        self.columns = columns
        self.referencedSchema = referencedSchema
        self.referencedTable = referencedTable
        self.referencedColumns = referencedColumns
    }
}

/// A table as the local catalog describes it, read at boot.
public struct PhysicalTable: Sendable, Hashable {
    public var oid: UInt32
    public var schema: String
    public var name: String
    public var columns: [PhysicalColumn]
    public var primaryKey: [String]
    public var foreignKeys: [ForeignKey]

    public init(oid: UInt32, schema: String, name: String, columns: [PhysicalColumn], primaryKey: [String], foreignKeys: [ForeignKey]) {
        self.oid = oid
        self.schema = schema
        self.name = name
        self.columns = columns
        self.primaryKey = primaryKey
        self.foreignKeys = foreignKeys
    }

    public func column(_ name: String) -> PhysicalColumn? { columns.first { $0.name == name } }

    /// The columns that carry business data: every column except FleetSync's tracking columns.
    public var syncedColumns: [PhysicalColumn] {
        columns.filter { !FleetSyncConfiguration.trackingColumns.contains($0.name) && !$0.generated }
    }
}
