"""The Approvals page: a call that a rule with effect "ask" holds waits there with Approve and
Deny; the admin approves it in the browser (the console calls DecideApproval with the admin's
credential), the call then proceeds with its approval, and the decision shows as decided."""

from __future__ import annotations

import grpc
import pytest
from playwright.sync_api import expect

from cortex.contracts.governance.v1 import governance_pb2, governance_pb2_grpc
from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.kernel.security.credentials import KeyStore

from .browser import assert_accessible, screenshot

pytestmark = pytest.mark.timeout(180)
ASK = ('[[rule]]\nid = "asker-asks"\neffect = "ask"\nservices = ["cortex.kernel.v1.KernelService"]\n'
       'methods = ["GetInfo"]\nprincipals = ["key:asker"]\n')


def test_admin_approves_a_waiting_call_on_the_approvals_page(console, open_page, axe):
    governance = console.kt.stub(governance_pb2_grpc.GovernanceServiceStub)
    governance.AddPolicy(governance_pb2.AddPolicyRequest(toml=ASK, name="asker-asks"), timeout=10)
    key = (("authorization", f"Bearer {KeyStore(console.kt.data_dir).create('asker', [])}"),)
    kernel = kernel_pb2_grpc.KernelServiceStub(console.kt.channel(as_admin=False))
    try:
        with pytest.raises(grpc.RpcError) as asked:
            kernel.GetInfo(kernel_pb2.GetInfoRequest(), timeout=10, metadata=key)
        approval = dict(asked.value.trailing_metadata())["x-cortex-approval"]

        local = open_page(console, "approvals")  # without a credential: told it needs the admin, and how
        expect(local.locator(".admin-needed")).to_contain_text("Seeing and deciding approvals needs the admin.")
        expect(local.get_by_role("alert")).to_have_count(0)

        page = open_page(console, "approvals", as_admin=True)
        waiting = page.get_by_role("region", name="Calls waiting for approval")
        expect(waiting).to_contain_text(approval)
        expect(waiting).to_contain_text("key:asker")
        assert_accessible(page, axe, "the approvals page with a waiting call")
        screenshot(page, "approvals")
        page.get_by_label("Note with the decision").fill("checked by a person")
        page.get_by_role("button", name=f"Approve {approval}").click()
        expect(page.get_by_text(f"Approved {approval}.")).to_be_visible()
        decided = page.get_by_role("region", name="Decided", exact=True)
        expect(decided).to_contain_text("checked by a person")
        expect(decided).to_contain_text("approved")
        expect(page.get_by_text("No call waits for approval.")).to_be_visible()

        info = kernel.GetInfo(kernel_pb2.GetInfoRequest(), timeout=10, metadata=(*key, ("x-cortex-approval", approval)))
        assert info.version
        [shown] = [a for a in governance.ListApprovals(governance_pb2.ListApprovalsRequest(), timeout=10).approvals
                   if a.id == approval]
        assert (shown.decided_by, shown.note) == ("admin", "checked by a person") and shown.used_by_call_id
        assert not page.errors and not local.errors
    finally:
        governance.RemovePolicy(governance_pb2.RemovePolicyRequest(id="asker-asks"), timeout=10)
