import XCTest
@testable import FleetSyncCore

final class ConfigurationTests: XCTestCase {
    static let valid = """
        [node]
        role = "vessel"
        id = "aurora"
        [database]
        url = "postgres://u@127.0.0.1:5432/db"
        [vessel]
        shore_url = "http://127.0.0.1:8080"
        interval_seconds = 5
        [limits]
        batch_events = 50
        [[table]]
        name = "vessel"
        route = "broadcast"
        [[table]]
        name = "seafarer"
        route = { column = "vessel_code" }
        [table.owners]
        vessel = ["contact_number"]
        shared = ["notes"]
        [[table]]
        name = "certificate"
        route = { parent = "seafarer", via = "seafarer_id" }
        on_delete = "refuse"
        tombstone = "revive"
        priority = 3
        """

    func errors(_ text: String) -> [ConfigurationError] {
        do {
            _ = try ConfigurationLoader.load(text: text)
            XCTFail("expected the configuration to be rejected")
            return []
        } catch {
            return error.errors
        }
    }

    func testValidConfigurationParsesIntoTypedStructs() throws {
        let c = try ConfigurationLoader.load(text: Self.valid)
        XCTAssertEqual(c.role, .vessel)
        XCTAssertEqual(c.nodeID, "aurora")
        XCTAssertEqual(c.vessel?.intervalSeconds, 5)
        XCTAssertEqual(c.limits.batchEvents, 50)
        XCTAssertEqual(c.limits.batchBytes, 1_048_576)
        XCTAssertEqual(c.tables.map(\.name), ["vessel", "seafarer", "certificate"])
        XCTAssertEqual(c.tables[0].route, .broadcast)
        XCTAssertEqual(c.tables[1].route, .column("vessel_code"))
        XCTAssertEqual(c.tables[1].owner(of: "contact_number"), .vessel)
        XCTAssertEqual(c.tables[1].owner(of: "notes"), .shared)
        XCTAssertEqual(c.tables[1].owner(of: "full_name"), .shore)
        XCTAssertEqual(c.tables[2].route, .parent(table: "seafarer", via: "seafarer_id"))
        XCTAssertEqual(c.tables[2].onDelete, .refuse)
        XCTAssertEqual(c.tables[2].tombstone, .revive)
        XCTAssertEqual(c.tables[2].priority, 3)
    }

    func testExampleConfigurationsAreValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for name in ["shore.toml", "vessel.toml"] {
            let text = try String(contentsOf: root.appendingPathComponent("examples/\(name)"), encoding: .utf8)
            let c = try ConfigurationLoader.load(text: text, source: name)
            XCTAssertEqual(c.tables.count, 4, name)
        }
    }

    func testUnknownKeysAreErrorsNamingTheKey() {
        let text = Self.valid.replacingOccurrences(of: "interval_seconds = 5", with: "interval_secnds = 5")
            .replacingOccurrences(of: "priority = 3", with: "priority = 3\nroute_by = \"x\"")
        let found = errors(text)
        XCTAssertTrue(found.contains { $0.key == "vessel.interval_secnds" && $0.problem == "unknown key" && $0.fix.contains("interval_seconds") }, "\(found)")
        XCTAssertTrue(found.contains { $0.key == "table[2].route_by" }, "\(found)")
    }

    func testColumnWithTwoOwnersIsRejected() {
        let text = Self.valid.replacingOccurrences(of: "shared = [\"notes\"]", with: "shared = [\"notes\", \"contact_number\"]")
        let found = errors(text)
        XCTAssertEqual(found.count, 1)
        XCTAssertEqual(found.first?.key, "table[1].owners")
        XCTAssertTrue(found.first!.problem.contains("\"contact_number\" is given two owners"), found.first!.problem)
    }

    /// Only the shore decides which vessel receives a row: a routing column or a column naming
    /// the parent that a vessel (or anyone) may write is refused.
    func testRoutingColumnsMustBeShoreOwned() {
        let column = errors(Self.valid.replacingOccurrences(of: "vessel = [\"contact_number\"]", with: "vessel = [\"contact_number\", \"vessel_code\"]"))
        XCTAssertTrue(column.contains { $0.key == "table[1].owners" && $0.problem.contains("routing column \"vessel_code\"") && $0.problem.contains("owned by vessel") }, "\(column)")
        let via = errors(Self.valid.replacingOccurrences(of: "tombstone = \"revive\"", with: "tombstone = \"revive\"\ndefault_owner = \"shared\""))
        XCTAssertTrue(via.contains { $0.key == "table[2].owners" && $0.problem.contains("column naming the parent \"seafarer_id\"") && $0.fix.contains("shore = [...]") }, "\(via)")
    }

    func testUnknownRoutingRuleIsRejected() {
        let found = errors(Self.valid.replacingOccurrences(of: "route = \"broadcast\"", with: "route = \"multicast\""))
        XCTAssertEqual(found.first?.key, "table[0].route")
        XCTAssertTrue(found.first!.problem.contains("\"multicast\" is not a known routing rule"))
        XCTAssertTrue(found.first!.fix.contains("broadcast"))
        let inline = errors(Self.valid.replacingOccurrences(of: "route = \"broadcast\"", with: "route = { hash = \"x\" }"))
        XCTAssertTrue(inline.contains { $0.key == "table[0].route.hash" && $0.problem == "unknown key" }, "\(inline)")
    }

    func testParentRouteMustNameAConfiguredTable() {
        let found = errors(Self.valid.replacingOccurrences(of: "parent = \"seafarer\"", with: "parent = \"crew\""))
        XCTAssertTrue(found.contains { $0.key == "table[2].route" && $0.problem.contains("\"crew\" is not a synced table") }, "\(found)")
    }

    func testBroadcastTableCannotHaveVesselOwnedColumns() {
        let text = Self.valid.replacingOccurrences(of: "route = \"broadcast\"", with: "route = \"broadcast\"\ndefault_owner = \"vessel\"")
        let found = errors(text)
        XCTAssertTrue(found.contains { $0.key == "table[0].owners" && $0.problem.contains("no single vessel owns") }, "\(found)")
    }

    func testBadValuesAreRejectedWithFixes() {
        var text = Self.valid.replacingOccurrences(of: "id = \"aurora\"", with: "id = \"Aurora Ship\"")
        text = text.replacingOccurrences(of: "role = \"vessel\"", with: "role = \"ship\"")
        text = text.replacingOccurrences(of: "batch_events = 50", with: "batch_events = 0")
        text = text.replacingOccurrences(of: "postgres://u@", with: "mysql://u@")
        let found = errors(text)
        let keys = Set(found.map(\.key))
        XCTAssertTrue(keys.isSuperset(of: ["node.id", "node.role", "limits.batch_events", "database.url"]), "\(keys)")
        XCTAssertTrue(found.allSatisfy { !$0.fix.isEmpty })
    }

    func testTrackingColumnsCannotBeOwned() {
        let found = errors(Self.valid.replacingOccurrences(of: "shared = [\"notes\"]", with: "shared = [\"notes\", \"sync_version\"]"))
        XCTAssertTrue(found.contains { $0.problem.contains("tracking column") }, "\(found)")
    }

    func testRoleSectionsMustMatch() {
        let found = errors(Self.valid.replacingOccurrences(of: "[vessel]\nshore_url = \"http://127.0.0.1:8080\"\ninterval_seconds = 5", with: "[shore]\nlisten = \"0.0.0.0:80\""))
        let keys = Set(found.map(\.key))
        XCTAssertTrue(keys.contains("vessel") && keys.contains("shore"), "\(found)")
    }

    func testInvalidTOMLReportsTheLine() {
        let found = errors("[node]\nrole = \n")
        XCTAssertTrue(found.first!.key.contains("line 2"), "\(found)")
    }

    func testOversizedFileIsRejected() {
        let found = errors(String(repeating: "#", count: ConfigurationLoader.maximumBytes + 1))
        XCTAssertTrue(found.first!.problem.contains("larger than"))
    }

    func testDuplicateTableAndRoutingLoopsAreRejected() {
        let text = Self.valid + "\n[[table]]\nname = \"vessel\"\nroute = \"broadcast\"\n"
        XCTAssertTrue(errors(text).contains { $0.problem.contains("configured twice") })
        let loop = Self.valid.replacingOccurrences(of: "route = { column = \"vessel_code\" }", with: "route = { parent = \"certificate\", via = \"c_id\" }")
        XCTAssertTrue(errors(loop).contains { $0.problem.contains("loops") }, "\(errors(loop))")
    }
}
