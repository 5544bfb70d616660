import Foundation
import XCTest
@testable import FleetSyncCore

final class BatchPlannerTests: XCTestCase {
    func table(_ name: String, _ fks: [(String, String)] = []) -> PhysicalTable {
        PhysicalTable(oid: 1, schema: "public", name: name, columns: [], primaryKey: ["id"], foreignKeys: fks.map {
            ForeignKey(name: "\(name)_\($0.0)_fkey", columns: [$0.0], referencedSchema: "public", referencedTable: $0.1, referencedColumns: ["id"])
        })
    }

    func testTablesApplyByForeignKeyDepth() throws {
        let configs = ["certificate", "seafarer", "vessel", "certificate_type"].map { TableConfiguration(name: $0, route: .broadcast) }
        let physical = [
            "vessel": table("vessel"), "certificate_type": table("certificate_type"),
            "seafarer": table("seafarer", [("vessel_id", "vessel")]),
            "certificate": table("certificate", [("seafarer_id", "seafarer"), ("type_id", "certificate_type")]),
        ]
        let plan = try BatchPlanner.plan(tables: configs, physical: physical)
        XCTAssertEqual(plan.tableOrder, ["certificate_type", "vessel", "seafarer", "certificate"])
    }

    func testCycleIsAnErrorNamingTheCycleUnlessAPriorityBreaksIt() throws {
        var configs = ["a", "b", "c"].map { TableConfiguration(name: $0, route: .broadcast) }
        let physical = ["a": table("a", [("b_id", "b")]), "b": table("b", [("c_id", "c")]), "c": table("c", [("a_id", "a")])]
        XCTAssertThrowsError(try BatchPlanner.plan(tables: configs, physical: physical)) { error in
            let planning = error as! PlanningError
            XCTAssertEqual(planning.cycle, ["a", "b", "c", "a"])
            XCTAssertTrue(planning.description.contains("a -> b -> c -> a"))
            XCTAssertTrue(planning.description.contains("priority"))
        }
        configs[2].priority = 0
        let plan = try BatchPlanner.plan(tables: configs, physical: physical)
        XCTAssertEqual(plan.tableOrder, ["c", "b", "a"])
    }

    func testSelfReferenceIsNotACycleAndIsRecorded() throws {
        let plan = try BatchPlanner.plan(tables: [TableConfiguration(name: "task", route: .broadcast)], physical: ["task": table("task", [("parent_id", "task")])])
        XCTAssertEqual(plan.selfReferences["task"], ["parent_id"])
    }

    func testChainDeliveredInReverseAppliesParentFirst() {
        let ids = (0..<1000).map { _ in UUID() }
        // Task i is the child of task i-1; delivered last-to-first.
        let rows = (0..<1000).reversed().map { i in (id: ids[i], parents: i == 0 ? [] : [ids[i - 1]]) }
        let order = BatchPlanner.parentFirst(rows).map { rows[$0].id }
        XCTAssertEqual(order, ids)
    }

    func testUnrelatedRowsKeepSequenceOrderAndCyclesDoNotHang() {
        let a = UUID(), b = UUID(), c = UUID()
        XCTAssertEqual(BatchPlanner.parentFirst([(a, []), (b, []), (c, [])]), [0, 1, 2])
        XCTAssertEqual(BatchPlanner.parentFirst([(a, [b]), (b, [a]), (c, [])]), [2, 0, 1])
    }
}
