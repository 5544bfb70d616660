import FleetSyncCore

/// Generates the capture trigger functions of one table from its catalog entry and configuration.
///
/// A function generated per table compares each column with `IS DISTINCT FROM` directly, instead
/// of diffing `to_jsonb(OLD)` against `to_jsonb(NEW)` at run time; that is what keeps single-row
/// updates near their uncaptured speed.
public struct CaptureTriggerBuilder: Sendable {
    public var table: TableConfiguration
    public var physical: PhysicalTable
    public var role: NodeRole
    public var nodeID: String

    public init(table: TableConfiguration, physical: PhysicalTable, role: NodeRole, nodeID: String) {
        self.table = table
        self.physical = physical
        self.role = role
        self.nodeID = nodeID
    }

    var qualifiedTable: String { SQL.qualified(physical.schema, physical.name) }
    var captureFunction: String { "fleetsync." + SQL.identifier("capture_\(physical.oid)") }
    var insertLogFunction: String { "fleetsync." + SQL.identifier("capture_insert_\(physical.oid)") }
    var updateFunction: String { "fleetsync." + SQL.identifier("capture_update_\(physical.oid)") }
    var deleteFunction: String { "fleetsync." + SQL.identifier("delete_\(physical.oid)") }

    /// Every statement that (re)installs capture on the table, in order.
    public func statements() -> [String] {
        [
            captureFunctionSQL(),
            insertLogFunctionSQL(),
            updateFunctionSQL(),
            deleteFunctionSQL(),
            "DROP TRIGGER IF EXISTS zz_fleetsync_capture ON \(qualifiedTable)",
            // Inserts: the WHEN clause skips the function for the sync engine's own writes without
            // entering PL/pgSQL. PostgreSQL parses a WHEN clause once per statement, which a COPY
            // of many applied rows pays once.
            "CREATE TRIGGER zz_fleetsync_capture BEFORE INSERT ON \(qualifiedTable) FOR EACH ROW \(Self.notApplying) EXECUTE FUNCTION \(captureFunction)()",
            // The insert's event is written AFTER the row is: an INSERT ... ON CONFLICT runs BEFORE
            // INSERT triggers for rows it then does not insert (DO NOTHING, or DO UPDATE, whose
            // update the update trigger captures), and what they wrote elsewhere would stay.
            "DROP TRIGGER IF EXISTS zz_fleetsync_capture_insert ON \(qualifiedTable)",
            "CREATE TRIGGER zz_fleetsync_capture_insert AFTER INSERT ON \(qualifiedTable) FOR EACH ROW \(Self.notApplying) EXECUTE FUNCTION \(insertLogFunction)()",
            "DROP TRIGGER IF EXISTS zz_fleetsync_capture_update ON \(qualifiedTable)",
            // Updates: no WHEN clause. Parsing one costs a single-row UPDATE statement more than
            // the whole function does (about 30,000 instructions of 400,000, measured); the
            // function checks the setting itself.
            "CREATE TRIGGER zz_fleetsync_capture_update BEFORE UPDATE ON \(qualifiedTable) FOR EACH ROW EXECUTE FUNCTION \(updateFunction)()",
            "DROP TRIGGER IF EXISTS zz_fleetsync_delete ON \(qualifiedTable)",
            "CREATE TRIGGER zz_fleetsync_delete BEFORE DELETE ON \(qualifiedTable) FOR EACH ROW \(Self.notApplying) EXECUTE FUNCTION \(deleteFunction)()",
            "DROP TRIGGER IF EXISTS zz_fleetsync_truncate ON \(qualifiedTable)",
            "CREATE TRIGGER zz_fleetsync_truncate BEFORE TRUNCATE ON \(qualifiedTable) FOR EACH STATEMENT EXECUTE FUNCTION fleetsync.refuse_truncate()",
        ]
    }

    static let notApplying = "WHEN (current_setting('fleetsync.applying', true) IS DISTINCT FROM 'on')"

    /// Statements that remove capture from the table, leaving its data and columns alone.
    public static func removalStatements(schema: String, name: String) -> [String] {
        let qualified = SQL.qualified(schema, name)
        return ["zz_fleetsync_capture", "zz_fleetsync_capture_insert", "zz_fleetsync_capture_update", "zz_fleetsync_delete", "zz_fleetsync_truncate", "zz_fleetsync_saga"].map {
            "DROP TRIGGER IF EXISTS \($0) ON \(qualified)"
        }
    }

    private func ownerPhrase(_ owner: FieldOwner) -> String {
        switch owner {
        case .shore: return "the shore"
        case .vessel: return "the vessel the row is routed to"
        case .shared: return "every node"
        }
    }

    /// A trigger function. No function-level `SET`: it would cost every call (about 8,000
    /// instructions); values whose text depends on session settings are pinned one by one
    /// (`ColumnCodec.captureExpression`).
    private func function(_ name: String, body: String) -> String {
        let tag = SQL.dollarTag(for: body)
        return "CREATE OR REPLACE FUNCTION \(name)() RETURNS trigger LANGUAGE plpgsql AS \(tag)\n\(body)\n\(tag)"
    }

    /// The function of the BEFORE INSERT trigger: a new row's version and this node's clocks.
    func captureFunctionSQL() -> String {
        let node = SQL.literal(nodeID)
        let columns = physical.syncedColumns.map(\.name)
        let creationClock = SQL.literal(FieldClock(counter: 0, node: nodeID).json.serialized) + "::jsonb"
        let insertClock = columns.map { column in
            "\(SQL.literal(column)), " + (table.owner(of: column).isWritable(by: role) ? "k" : creationClock)
        }
        let body = """
        DECLARE
          k jsonb;
          v bigint;
        BEGIN
          -- The sync engine's own inserts are skipped by the trigger's WHEN clause.
          v := nextval('fleetsync.lamport');
          k := jsonb_build_array(v, \(node));
          NEW.sync_version := v;
          NEW.is_deleted := false;
          NEW.sync_clock := \(SQL.jsonObject(insertClock));
          RETURN NEW;
        END
        """
        return function(captureFunction, body: body)
    }

    /// The function of the AFTER INSERT trigger: every column of the row as inserted, into the
    /// capture log, at the version the BEFORE trigger gave it.
    func insertLogFunctionSQL() -> String {
        let body = """
        BEGIN
          INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta)
            VALUES (NEW.sync_version, \(SQL.literal(table.name)), NEW.id, 'I', NEW.sync_version, 0, \(ColumnCodec.captureObject(physical.syncedColumns)));
          RETURN NULL;
        END
        """
        return function(insertLogFunction, body: body)
    }

    /// The function of the update trigger: only the columns whose value changed, each with the
    /// write's clock; an update that changes nothing writes nothing. Separate from the insert
    /// function so that an update evaluates no `TG_OP` test: in single-statement transactions
    /// PL/pgSQL prepares each statement it runs again, a few thousand instructions each.
    func updateFunctionSQL() -> String {
        let node = SQL.literal(nodeID)
        let tableName = SQL.literal(table.name)
        let columns = physical.syncedColumns.map(\.name)
        let owned = columns.filter { table.owner(of: $0).isWritable(by: role) }
        let foreign = columns.filter { !table.owner(of: $0).isWritable(by: role) }

        var body = """
        DECLARE
          d jsonb := '{}'::jsonb;
          c jsonb;
          k jsonb;
          v bigint;
        BEGIN
          IF current_setting('fleetsync.applying', true) = 'on' THEN RETURN NEW; END IF;
          IF NEW.id IS DISTINCT FROM OLD.id THEN
            RAISE EXCEPTION USING ERRCODE = '42501',
              MESSAGE = \(SQL.literal("fleetsync: the id of a row of table \"\(table.name)\" cannot change")),
              HINT = 'insert a new row instead';
          END IF;

        """
        for column in foreign {
            let owner = table.owner(of: column)
            let physicalColumn = physical.syncedColumns.first { $0.name == column } ?? PhysicalColumn(name: column, type: "")
            let message = "fleetsync: column \"\(column)\" of table \"\(table.name)\" is owned by \(ownerPhrase(owner)); this \(role.rawValue) (\(nodeID)) may not write it"
            body += """
              IF \(ColumnCodec.changed(physicalColumn)) THEN
                RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = \(SQL.literal(message)),
                  HINT = \(SQL.literal("make this change on \(ownerPhrase(owner)); it reaches this node with the next exchange"));
              END IF;

            """
        }
        body += """
          v := greatest(OLD.sync_version + 1, nextval('fleetsync.lamport'));
          k := jsonb_build_array(v, \(node));
          c := OLD.sync_clock;

        """
        for column in physical.syncedColumns where owned.contains(column.name) {
            let id = SQL.identifier(column.name)
            let key = SQL.literal(column.name)
            body += """
              IF \(ColumnCodec.changed(column)) THEN
                d := d || jsonb_build_object(\(key), \(ColumnCodec.captureExpression(column))); c := c || jsonb_build_object(\(key), k);
              END IF;

            """
        }
        let undelete = table.tombstone == .wins
            ? """
                  IF NOT NEW.is_deleted AND OLD.is_deleted THEN
                    RAISE EXCEPTION USING ERRCODE = '42501',
                      MESSAGE = \(SQL.literal("fleetsync: a deleted row of table \"\(table.name)\" cannot be brought back")),
                      HINT = 'tombstones win on this table (tombstone = "wins"); insert a new row instead';
                  END IF;

              """
            : ""
        // Where updates revive (tombstone = "revive"), a write to a deleted row brings it back here
        // as it does on every node that receives it: sent as is_deleted = false with the write's
        // clock, so that all nodes hold the same field.
        let revive = table.tombstone == .revive
            ? """
              IF OLD.is_deleted AND NEW.is_deleted AND d <> '{}'::jsonb THEN
                NEW.is_deleted := false;
                d := d || jsonb_build_object('is_deleted', false); c := c || jsonb_build_object('is_deleted', k);
              END IF;

            """
            : ""
        // A node that may not delete rows of the table may not set the tombstone by hand either,
        // nor, where updates revive, clear it without writing anything else.
        let mayDelete = table.allowsDelete(by: role)
        let refusedDelete = mayDelete ? "" : """
                  IF NEW.is_deleted THEN
            \(deleteRefusal(indent: "        "))
                  END IF;

            """
        let refusedRevive = mayDelete || table.tombstone != .revive ? "" : """
                  IF NOT NEW.is_deleted AND d = '{}'::jsonb THEN
                    RAISE EXCEPTION USING ERRCODE = '42501',
                      MESSAGE = \(SQL.literal("fleetsync: this \(role.rawValue) (\(nodeID)) may not bring back a deleted row of table \"\(table.name)\": only \(table.deleters) may delete or restore rows")),
                      HINT = 'write a column this node owns (that brings the row back), or restore it on the shore';
                  END IF;

            """
        body += """
          IF NEW.is_deleted IS DISTINCT FROM OLD.is_deleted THEN
            IF NEW.is_deleted IS NULL THEN NEW.is_deleted := OLD.is_deleted; ELSE
        \(refusedDelete)\(undelete)\(refusedRevive)      d := d || jsonb_build_object('is_deleted', NEW.is_deleted); c := c || jsonb_build_object('is_deleted', k);
            END IF;
          END IF;
        \(revive)  IF d = '{}'::jsonb THEN
            NEW.sync_version := OLD.sync_version;
            NEW.sync_clock := OLD.sync_clock;
            RETURN NEW;
          END IF;
          NEW.sync_version := v;
          NEW.sync_clock := c;
          INSERT INTO fleetsync.capture_log (seq, table_name, row_id, op, version, base_version, delta)
            VALUES (v, \(tableName), NEW.id, 'U', v, OLD.sync_version, d);
          RETURN NEW;
        END
        """
        return function(updateFunction, body: body)
    }

    /// The RAISE that refuses a delete this node may not make: every delete where
    /// `on_delete = "refuse"`, and where `delete_by` does not allow this node (a vessel deleting a
    /// broadcast row, say: the tombstone would delete it for the whole fleet).
    private func deleteRefusal(indent: String) -> String {
        let message: String, hint: String
        if table.onDelete == .refuse {
            message = "fleetsync: rows of table \"\(table.name)\" cannot be deleted (on_delete = \"refuse\")"
            hint = "mark the row inactive in a column of its own, or configure on_delete = \"tombstone\""
        } else {
            message = "fleetsync: rows of table \"\(table.name)\" may be deleted by \(table.deleters); this \(role.rawValue) (\(nodeID)) may not delete them"
            hint = "delete the row on the shore (the deletion reaches this node with the next exchange), or set delete_by = \"anyone\" for this table on the shore and every vessel"
        }
        return """
            \(indent)RAISE EXCEPTION USING ERRCODE = '42501',
            \(indent)  MESSAGE = \(SQL.literal(message)),
            \(indent)  HINT = \(SQL.literal(hint));
            """
    }

    func deleteFunctionSQL() -> String {
        let action = table.allowsDelete(by: role)
            ? """
                UPDATE \(qualifiedTable) SET is_deleted = true WHERE id = OLD.id;
                RETURN NULL;
              """
            : deleteRefusal(indent: "  ")
        let body = """
        BEGIN
        \(action)
        END
        """
        return function(deleteFunction, body: body)
    }
}
