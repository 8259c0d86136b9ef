"""Azure deployment SKUs (ARM `sku.name`) → the price dimensions they are billed on."""

from __future__ import annotations

from dataclasses import dataclass

from azure_genai_prices import BillingMode, DeploymentType


@dataclass(frozen=True)
class Sku:
    name: str  # canonical ARM spelling, e.g. DataZoneStandard
    deployment: DeploymentType
    mode: BillingMode
    provisioned: bool = False

    @property
    def payg(self) -> "Sku":
        """The pay-as-you-go SKU that serves the same tokens (what PTU is compared against)."""
        return PAYG_OF.get(self.name, self)

    def with_mode(self, mode: BillingMode) -> "Sku":
        return Sku(self.name, self.deployment, mode, self.provisioned)


_ALL = (
    Sku("GlobalStandard", DeploymentType.GLOBAL, BillingMode.STANDARD),
    Sku("DataZoneStandard", DeploymentType.DATA_ZONE, BillingMode.STANDARD),
    Sku("Standard", DeploymentType.REGIONAL, BillingMode.STANDARD),
    Sku("GlobalBatch", DeploymentType.GLOBAL, BillingMode.BATCH),
    Sku("DataZoneBatch", DeploymentType.DATA_ZONE, BillingMode.BATCH),
    Sku("GlobalProvisionedManaged", DeploymentType.GLOBAL, BillingMode.STANDARD, True),
    Sku("DataZoneProvisionedManaged", DeploymentType.DATA_ZONE, BillingMode.STANDARD, True),
    Sku("ProvisionedManaged", DeploymentType.REGIONAL, BillingMode.STANDARD, True),
)
SKUS = {s.name.lower(): s for s in _ALL}
PAYG_OF = {"GlobalProvisionedManaged": SKUS["globalstandard"], "DataZoneProvisionedManaged": SKUS["datazonestandard"],
           "ProvisionedManaged": SKUS["standard"]}


def sku(name: str | None) -> Sku | None:
    """The SKU for an ARM name in any case/spacing ('Global Standard', 'globalstandard'); None if unknown."""
    if not name:
        return None
    return SKUS.get(name.replace(" ", "").replace("-", "").replace("_", "").lower())
